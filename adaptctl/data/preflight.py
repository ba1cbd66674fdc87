"""What `adaptctl validate` checks in the data without loading a model or the data libraries: each
file the recipe names exists, the columns its templates read are in the file's header (csv, tsv) or
first rows (JSON), and those first rows render.  Prepare checks all of it again on every row; this is
the cheap part, so that a typo is found in a second and not after minutes of tokenizing.
"""

from __future__ import annotations

from pathlib import Path

from adaptctl.data.columns import PASSAGES, TemplateRowError, column_problems, render
from adaptctl.core.errors import UserError

SOURCES = ("source", "validation", "test")


def data_problems(recipe, recipe_dir: Path, task) -> list[tuple[tuple, str, str | None]]:
    """(field path, message, hint) for every problem found in the recipe's data files; `task` is the
    recipe's TaskSpec (its templates hook names what prepare renders)."""
    from adaptctl.data.readers import peek

    problems = []
    for name in SOURCES:
        source = getattr(recipe.data, name)
        if source is None:
            continue
        try:
            sample = peek(source, recipe_dir)
        except UserError as err:  # missing, empty, unreadable: what prepare would say, at data.<name>
            problems.append((("data", name), err.message, err.hint))
            continue
        except (OSError, ValueError) as exc:  # a path the OS refuses (a NUL byte, too long, a loop of links)
            problems.append((("data", name), f"cannot read {source.path}: {exc}", "check the path"))
            continue
        if sample is None:
            continue  # a hub id, parquet, a large JSON document: prepare reads and checks them
        sample = _with_passages(sample, recipe, task)
        templates = {**{("data", key): t for key, t in _templates(task.templates, recipe.data, sample.columns).items()},
                     **_kept_columns(recipe), **_retrieval_templates(recipe, task)}
        rendered = {field: t for field, t in templates.items() if field[-1] not in task.structured_fields}
        templates.update(_reference_column(recipe))
        problems += column_problems(templates, sample.columns, sample.where) or _row_problems(rendered, sample)
    return _unique(problems + _general_problems(recipe, recipe_dir) + _corpus_problems(recipe, recipe_dir))


def _with_passages(sample, recipe, task):
    """data.retrieval puts the passages into each row before the prompt renders: a column the file lacks."""
    from dataclasses import replace

    if recipe.data.retrieval is None or task.retrieval_use(recipe.data) != "prompt":
        return sample
    return replace(sample, columns=[*sample.columns, PASSAGES], rows=[{**row, PASSAGES: ""} for row in sample.rows])


def _retrieval_templates(recipe, task) -> dict:
    """data.retrieval's templates over the data's rows (the query, the gold passage)."""
    settings = recipe.data.retrieval
    if settings is None or task.retrieval_use(recipe.data) != "prompt":
        return {}
    return {("data", "retrieval", name): getattr(settings, name) for name in ("query", "gold")
            if getattr(settings, name) is not None}


def _corpus_problems(recipe, recipe_dir: Path) -> list[tuple[tuple, str, str | None]]:
    """data.retrieval.corpus: there, and the columns its text and id templates read in it."""
    from adaptctl.data.readers import peek

    settings, field = recipe.data.retrieval, ("data", "retrieval", "corpus")
    if settings is None:
        return []
    try:
        sample = peek(settings.corpus, recipe_dir)
    except UserError as err:
        return [(field, err.message, err.hint)]
    except (OSError, ValueError) as exc:
        return [(field, f"cannot read {settings.corpus.path}: {exc}", "check the path")]
    if sample is None:
        return []
    templates = {(*field, "text"): settings.corpus.text, **({(*field, "id"): settings.corpus.id} if settings.corpus.id else {})}
    return column_problems(templates, list(sample.columns), sample.where)


def _general_problems(recipe, recipe_dir: Path) -> list[tuple[tuple, str, str | None]]:
    """evaluate.general's file (the forgetting check's text): there, and its text column in it."""
    from adaptctl.data.readers import peek

    general = recipe.evaluate.general
    if general is None:
        return []
    field = ("evaluate", "general")
    try:
        sample = peek(general.source, recipe_dir)
    except UserError as err:
        return [((*field, "source"), err.message, err.hint)]
    except (OSError, ValueError) as exc:
        return [((*field, "source"), f"cannot read {general.source.path}: {exc}", "check the path")]
    if sample is None:
        return []
    return column_problems({(*field, "text"): general.text}, sample.columns, sample.where)


def _templates(task_templates, data, columns: list[str]) -> dict:
    """The data.* templates prepare renders for the task: the ones set."""
    found = task_templates(data, columns)
    return {key: template for key, template in found.items() if template is not None}


def _kept_columns(recipe) -> dict:
    """evaluate.slices and data.splits.group: the templates prepare renders beside the task's."""
    found: dict[tuple, str] = {("evaluate", "slices", i): template for i, template in enumerate(recipe.evaluate.slices)}
    if recipe.data.splits.group:
        found[("data", "splits", "group")] = recipe.data.splits.group
    return found


def _reference_column(recipe) -> dict:
    """data.references: a column that must exist; read as it is (a list is what it is for), not rendered."""
    references = getattr(recipe.data, "references", None)
    return {("data", "references"): references} if references else {}


def _row_problems(templates: dict, sample) -> list[tuple[tuple, str, str | None]]:
    """The first row each template cannot render (a list by `{col}`, a missing key in Jinja)."""
    problems = []
    for key, template in templates.items():
        for row, place in zip(sample.rows, sample.places):
            try:
                render(template, row)
            except TemplateRowError as err:
                problems.append((key, f"{place}: {err.message}", err.hint))
                break
    return problems


def _unique(problems: list) -> list:
    """A file named twice (data.source and data.test) is reported once."""
    return list(dict.fromkeys(problems))
