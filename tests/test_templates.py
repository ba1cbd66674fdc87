"""data.* templates (issue 23): `{col}` as before, `{{ }}` through Jinja2's sandbox; a list or object
rendered by `{col}` is a located error; validate finds template, column and data-file problems at the
recipe line without loading a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from adaptctl.data.columns import TemplateRowError, render, template_columns, template_problem

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
ROWS = [{"id": i, "abstract": [f"We study {w}.", f"These {w} models work."], "target": [lab, "other"],
         "meta": {"year": 2020 + i}}
        for i, (w, lab) in enumerate([("cats", "pos"), ("dogs", "neg")] * 10)]


# ------------------------------------------------------------------ rendering
@pytest.mark.parametrize("template, expected", [
    ("{{ abstract | join(' ') }}", "We study cats. These cats models work."),
    ("{{ target[0] }}", "pos"),
    ("{{ abstract[1] | upper }} ({{ meta.year }})", "THESE CATS MODELS WORK. (2020)"),
    ("{% for s in abstract %}- {{ s }}\n{% endfor %}", "- We study cats.\n- These cats models work.\n"),
    ("Q: {{ id }}\n", "Q: 0\n"),  # the trailing newline a prompt ends with is kept
    ("{{ missing_is_none }}", ""),  # an empty cell renders as '', as {col} does
])
def test_jinja_indexes_joins_and_filters(template, expected):
    assert render(template, {**ROWS[0], "missing_is_none": None}) == expected


def test_format_templates_render_as_before():
    row = {"title": "Hi", "body": "there", "score": 0.25, "empty": None}
    assert render("{title}: {body}", row) == "Hi: there"
    assert render("{score:.1f}|{empty}|}}", row) == "0.2||}"  # a format spec, an empty cell, a literal brace
    assert render("title", row) == "Hi" and render("score", row) == "0.25"


@pytest.mark.parametrize("template, kind, hint", [
    ("{abstract}", "a list", "{{ abstract | join(' ') }}"),
    ("abstract", "a list", "{{ abstract[0] }}"),
    ("Year: {meta}", "an object", "{{ meta.year }}"),
])
def test_a_list_or_object_by_col_is_refused_with_a_jinja_hint(template, kind, hint):
    with pytest.raises(TemplateRowError) as info:
        render(template, ROWS[0])
    assert f"holds {kind}, not text" in info.value.message and hint in info.value.hint


def test_jinja_is_sandboxed_and_strict():
    with pytest.raises(TemplateRowError, match="SecurityError"):
        render("{{ abstract.__class__.__mro__ }}", ROWS[0])
    with pytest.raises(TemplateRowError, match="UndefinedError"):
        render("{{ meta.month }}", ROWS[0])
    with pytest.raises(TemplateRowError, match="UndefinedError"):
        render("{{ target[5] }}", ROWS[0])


# ----------------------------------------------------------- checks without data
@pytest.mark.parametrize("template, words", [
    ("{{ abstract | join(' ') ", "Jinja syntax error"),
    ("{{ abstract | joinn(' ') }}", "No filter named 'joinn'"),
    ("{% for s in abstract %}{{ s }}", "Jinja syntax error"),
    ("{{ title }}: {body}", "'{body}' would be printed as it is"),
    ("{target[0]}", "'{{ target[0] }}'"),
    ("{meta.year}", "needs a Jinja template"),
])
def test_template_problems_found_without_data(template, words):
    assert words in (template_problem(template) or "")


@pytest.mark.parametrize("template", ["{{ abstract | join(' ') }}", "{{ target[0] }}", "{title}: {body}", "text",
                                      "{% if meta %}{{ meta.year }}{% endif %}", "{{ '{kept}' }} {{ body }}",
                                      "{title:>10} }}"])
def test_good_templates_of_both_syntaxes_pass(template):
    assert template_problem(template) is None


def test_columns_a_jinja_template_reads():
    assert template_columns("{% for s in abstract %}{{ s }}{% endfor %} {{ target[0] | lower }} {{ range(2) }}",
                            []) == ["abstract", "target"]
    assert template_columns("{target}: {body!r}", []) == ["target", "body"]


# ------------------------------------------------------------------ the CLI
def write(folder: Path, data: dict, *, rows=ROWS, task="classification", name="data.jsonl") -> Path:
    if rows is not None:
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = SMOL if task in ("causal-lm", "preference") else MINILM  # a decoder for the decoder tasks: model.base is checked
    recipe = {"name": "templates", "task": task, "model": {"base": model},
              "data": {"source": name, "max_length": 32, "splits": {"validation": 0.2, "test": 0.2}, **data},
              "method": {"name": "full"}}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def recipe_line(recipe: Path, key: str) -> int:
    return next(n for n, line in enumerate(recipe.read_text().splitlines(), 1) if line.startswith(f"  {key}:"))  # data.<key>


def test_prepare_renders_jinja_indexing_join_and_filters(run_cli, tmp_path):
    import datasets

    recipe = write(tmp_path, {"text": "{{ abstract | join(' ') | lower }} ({{ meta.year }})", "label": "{{ target[0] }}"})
    code, _, err = run_cli(["validate", recipe])
    assert code == 0, err
    code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    assert code == 0, err
    prepared = datasets.load_from_disk(str(tmp_path / "run" / "prepare" / "data"))
    texts = {t for split in prepared.values() for t in split["text"]}
    assert "we study cats. these cats models work. (2020)" in texts
    assert set(prepared["train"]["label"]) == {"pos", "neg"}
    labels = json.loads((tmp_path / "run" / "prepare" / "labels.json").read_text())["label2id"]
    assert set(labels) == {"pos", "neg"}


@pytest.mark.parametrize("task, data, key", [
    ("classification", {"text": "Abstract: {abstract}", "label": "{{ target[0] }}"}, "text"),
    ("causal-lm", {"prompt": "Abstract: {abstract}", "response": "{{ target[0] }}"}, "prompt"),  # its own canonicalize
])
def test_prepare_refuses_a_list_by_col_naming_the_row_and_the_field(run_cli, tmp_path, task, data, key):
    rows = [{**r, "abstract": r["abstract"][0]} for r in ROWS[:5]] + ROWS[5:]  # a list from line 6 on
    recipe = write(tmp_path, data, rows=rows, task=task)
    code, out, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    assert code == 1 and out == "" and "Traceback" not in err, err
    assert f"{tmp_path}/data.jsonl:6: data.{key}: column 'abstract' holds a list, not text" in err
    assert "{{ abstract | join(' ') }}" in err and "{{ abstract[0] }}" in err


def test_prepare_locates_a_row_jinja_cannot_render(run_cli, tmp_path):
    rows = ROWS[:3] + [{**ROWS[3], "target": []}] + ROWS[4:]
    recipe = write(tmp_path, {"text": "{{ abstract[0] }}", "label": "{{ target[0] }}"}, rows=rows)
    code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    assert code == 1 and "Traceback" not in err, err
    assert f"{tmp_path}/data.jsonl:4: data.label: template '{{{{ target[0] }}}}' cannot render a row: UndefinedError" in err


@pytest.mark.parametrize("data, key, words", [
    ({"text": "{{ abstract | join(' ' }}", "label": "label"}, "text", "template \"{{ abstract | join(' ' }}\": Jinja syntax error"),
    ({"text": "{target[0]}", "label": "label"}, "text", "'{{ target[0] }}'"),
    ({"text": "{{ abstrct | join(' ') }}", "label": "{{ target[0] }}"}, "text", "column 'abstrct' is not in"),
    ({"text": "{{ abstract[0] }}", "label": "category"}, "label", "column 'category' is not in"),
    ({"text": "{abstract}", "label": "{{ target[0] }}"}, "text", "data.jsonl:1: column 'abstract' holds a list"),
    ({"text": "{{ abstract[0] }}", "label": "{{ meta.month }}"}, "label", "data.jsonl:1: template '{{ meta.month }}' cannot render"),
])
def test_validate_finds_template_and_column_problems_at_the_recipe_line(run_cli, tmp_path, data, key, words):
    recipe = write(tmp_path, data)
    code, out, err = run_cli(["validate", recipe])
    assert code == 1 and out == "" and "Traceback" not in err, err
    assert f"{recipe}:{recipe_line(recipe, key)}:3: data.{key}: " in err and words in err, err
    assert "hint:" in err


def test_validate_finds_a_missing_data_file_with_its_resolved_path(run_cli, tmp_path):
    recipe = write(tmp_path, {"text": "{{ abstract[0] }}", "label": "{{ target[0] }}", "test": "tset.jsonl"})
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and "Traceback" not in err, err
    assert f"{recipe}:{recipe_line(recipe, 'test')}:3: data.test: data not found: {tmp_path}/tset.jsonl" in err
    (tmp_path / "data.jsonl").unlink()
    code, _, err = run_cli(["validate", recipe])
    assert f"data.source: data not found: {tmp_path}/data.jsonl" in err


def test_validate_skips_what_it_cannot_check_cheaply(run_cli, tmp_path):
    """A hub id needs the network or the datasets cache: prepare reads it; validate does not fail on it."""
    recipe = write(tmp_path, {"source": "someone/some-dataset", "text": "text", "label": "label"}, rows=None)
    code, _, err = run_cli(["validate", recipe])
    assert code == 0, err


def test_validate_reads_only_the_first_rows_of_a_jsonl_and_the_header_of_a_csv(run_cli, tmp_path):
    rows = ROWS + [{"text": "a column only a late row has"}]
    recipe = write(tmp_path, {"text": "text", "label": "label"}, rows=rows)
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and f"column 'text' is not in the first 10 rows of {tmp_path}/data.jsonl" in err, err
    (tmp_path / "data.csv").write_text("title,label\n" + "x,1\n" * 5)
    recipe = write(tmp_path, {"source": "data.csv", "text": "{title} {body}", "label": "label"}, rows=None)
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and f"column 'body' is not in {tmp_path}/data.csv" in err and "columns there are: title, label" in err


def test_validate_accepts_numbered_references_and_nested_squad(run_cli, tmp_path):
    rows = [{"dialogue": "A: hi", "summary1": "greeting", "summary2": "hello"}]
    recipe = write(tmp_path, {"prompt": "{{ dialogue }}\nSummary:", "response": "{{ summary }}"}, rows=rows,
                   task="causal-lm")
    code, _, err = run_cli(["validate", recipe])
    assert code == 0, err
    squad = {"data": [{"title": "t", "paragraphs": [{"context": "Ada wrote.", "qas": []}]}]}
    (tmp_path / "squad.json").write_text(json.dumps(squad))
    recipe = write(tmp_path, {"source": {"path": "squad.json", "field": "data"}, "max_length": 256}, rows=None,
                   task="extractive-qa")
    code, _, err = run_cli(["validate", recipe])
    assert code == 0, err


def test_preflight_templates_match_the_tasks(tmp_path):
    """data/preflight.py reads the templates each task renders from the task's own spec."""
    from adaptctl.data.preflight import _templates
    from adaptctl.recipe.schema import Recipe
    from adaptctl.tasks import get_task

    for task, data in [("classification", {"text": "{a}", "label": "b"}), ("causal-lm", {"text": "{a}"}),
                       ("causal-lm", {"prompt": "{a}", "response": "{b}"}), ("seq2seq", {"prompt": "{a}", "response": "b"})]:
        recipe = Recipe.model_validate({"name": "x", "task": task, "model": {"base": MINILM},
                                        "data": {"source": "d.csv", **data}})
        expected = {k: v for k, v in get_task(task).templates(recipe.data, ["a", "b"]).items() if v is not None}
        assert _templates(get_task(task).templates, recipe.data, ["a", "b"]) == expected, task


def test_numbered_references_through_causal_lm_with_a_jinja_response():
    """DialogSum's test file has summary1..3 and no summary: `{{ summary }}` reads them as references."""
    from datasets import Dataset

    from adaptctl.recipe.schema import Recipe
    from adaptctl.tasks import causal_lm

    recipe = Recipe.model_validate({"name": "x", "task": "causal-lm", "model": {"base": MINILM},
                                    "data": {"source": "d.jsonl", "prompt": "{{ dialogue | upper }}:",
                                             "response": "{{ summary }}"}})
    ds = Dataset.from_list([{"dialogue": "hi", "summary1": "a greeting", "summary2": "hello", "summary3": ""}])
    mapped, dropped = causal_lm.canonicalize(ds, recipe, "d.jsonl")
    assert mapped[0]["prompt"] == "HI:" and mapped[0]["response"] == "a greeting"
    assert mapped[0]["references"] == ["a greeting", "hello"] and dropped == {"empty": 0}
