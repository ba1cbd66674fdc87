"""Generate the docs site's reference pages from the code, so that neither can drift from it.

    python scripts/gen_docs.py DOCS_DIR

writes, under DOCS_DIR/reference/ (not committed: docs/reference/ is in .gitignore):
- recipe.md: every recipe field from the pydantic schema (type, allowed values, default, description)
  and, per section, a YAML example whose values come from the shipped recipes where one sets the field;
- cli.md: every command, argument and option of the Typer app;
- bench/: a copy of every bench/RESULTS*.md (links fixed for the site) and an index of them.
`make docs` runs it before `mkdocs build`; tests/test_docs.py runs it into a temporary copy of docs/.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import types
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The examples' values: the quickstart's first, so that the top-level example reads as one recipe.
SHIPPED_RECIPES = [*sorted((ROOT / "recipes").glob("*.yaml")), *sorted((ROOT / "bench" / "recipes").glob("*.yaml"))]


# ----------------------------------------------------------------------------------- recipe
def _anchor(model: type[BaseModel]) -> str:
    return model.__name__.lower()


def _type_text(annotation) -> str:
    """A reader's spelling of a field type: `int`, `list of str`, `"a"` | `"b"`, a link to a section."""
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " &#124; ".join(f"`{v}`" for v in typing.get_args(annotation))
    if origin is typing.Annotated:
        inner, *metadata = typing.get_args(annotation)
        return _type_text(inner) + "".join(_bounds_text(m) for m in metadata)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        return f"list of {_type_text(typing.get_args(annotation)[0])}"
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"map of {_type_text(key)} to {_type_text(value)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{_anchor(annotation)})"
    return f"`{getattr(annotation, '__name__', str(annotation))}`"


BOUNDS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))


def _bounds_text(metadata) -> str:
    """`, > 0` for a field declared with Field(gt=0): the range a value must be in."""
    found = [f"{sign} {getattr(metadata, name)}" for name, sign in BOUNDS if getattr(metadata, name, None) is not None]
    found += [_bounds_text(m) .lstrip(", ") for m in getattr(metadata, "metadata", ())]
    return "".join(f", {text}" for text in found if text)


def _field_type_text(field) -> str:
    return _type_text(field.annotation) + "".join(_bounds_text(m) for m in field.metadata)


def _sections_in(annotation) -> list[type[BaseModel]]:
    """The pydantic sections a field's type holds (through unions, lists and maps)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [s for arg in typing.get_args(annotation) for s in _sections_in(arg)]


def _yaml_value(value) -> str:
    """One value as YAML flow text: `true`, `null`, `[query, value]`, `{name: full}`, `"1e-4"`."""
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_defaults=True)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    text = text.removesuffix("\n...").removesuffix(" ...")
    return json.dumps(value) if "\n" in text else text  # a multi-line string: one line, escaped (still YAML)


def _default_text(field) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:  # a factory that takes the validated data
            return "(computed)"
        return f"`{_yaml_value(value)}`"
    return f"`{_yaml_value(field.default)}`"


def _literal_values(annotation) -> list:
    """Every value a Literal in the annotation allows (through unions): the names of a method section."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [v for arg in typing.get_args(annotation) for v in _literal_values(arg)]


# ---- examples: values the shipped recipes use
def _flatten(document: dict, prefix: tuple = ()) -> dict[tuple, object]:
    flat = {}
    for key, value in document.items():
        if isinstance(value, dict) and key != "parameters":  # a sweep's parameters are a map, not a section
            flat.update(_flatten(value, prefix + (key,)))
        flat[prefix + (key,)] = value
    return flat


def _shipped_values() -> dict[tuple, object]:
    """(dotted path) -> the first value a shipped recipe gives it; method fields keyed by method name."""
    found: dict[tuple, object] = {}
    for path in SHIPPED_RECIPES:
        document = yaml.safe_load(path.read_text()) or {}
        for source in ("source", "validation", "test"):  # a path string is shorthand for {path: ...}
            if isinstance(document.get("data", {}).get(source), str):
                document["data"][source] = {"path": document["data"][source]}
        method = document.get("method", {}).get("name") if isinstance(document.get("method"), dict) else None
        for key, value in _flatten(document).items():
            if key[0] == "method":
                key = ("method", method) + key[1:]
            found.setdefault(key, value)
    return found


def _readable(value):
    """A path a shipped recipe gives relative to itself reads as the user's own (`data/train.jsonl`)."""
    if isinstance(value, str) and value.startswith(("../", "./")):
        return f"data/{Path(value).name}" if "." in Path(value).name else f"runs/{Path(value).name}"
    return value


def _example(value) -> str:
    """A table cell: the value a shipped recipe gives the field, as YAML."""
    if value is None or value == [] or value == {} or isinstance(value, dict) and not value.keys() - {"name"}:
        return ""
    return f"`{_yaml_value(_readable(value))}`"   # a code span: Markdown's tables keep its | and <


METHOD_KEYS: set[str] = set()   # the method names: in paths, but not YAML keys
MAP_KEY = "<name>"              # in a path: any key of a map (sweep.parameters.<name>)


def _is_map(annotation) -> bool:
    if typing.get_origin(annotation) is dict:
        return True
    return any(_is_map(a) for a in typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType))


# ---- the sections, walked from Recipe with the paths at which each appears
def _walk(root: type[BaseModel]) -> dict[type[BaseModel], list[tuple]]:
    paths: dict[type[BaseModel], list[tuple]] = {}
    queue: list[tuple[type[BaseModel], tuple]] = [(root, ())]
    while queue:
        model, path = queue.pop(0)
        paths.setdefault(model, []).append(path)
        for name, field in model.model_fields.items():
            for section in _sections_in(field.annotation):
                if name == "method":
                    for method_name in _method_names(section):
                        METHOD_KEYS.add(method_name)
                    queue.append((section, path + (name, _method_names(section)[0])))
                else:
                    queue.append((section, path + ((name, MAP_KEY) if _is_map(field.annotation) else (name,))))
    return paths


def _method_names(section: type[BaseModel]) -> list:
    return _literal_values(section.model_fields["name"].annotation)


def _path_text(path: tuple) -> str:
    return ".".join(k for k in path if k not in METHOD_KEYS) or "(top level)"


def _section_lines(model: type[BaseModel], paths: list[tuple], shipped: dict, level: str = "##") -> list[str]:
    if not paths[0]:
        title = "Top level"
    elif paths[0][0] == "method" and len(paths[0]) == 2:
        title = "method: " + " | ".join(f"`{n}`" for n in _method_names(model))
    else:
        title = ", ".join(f"`{_path_text(p)}`" for p in paths)
    lines = [f"{level} {title} {{#{_anchor(model)}}}", ""]
    if model.__doc__ and "pydantic" not in model.__doc__.lower() and "!!! abstract" not in model.__doc__:
        lines += [" ".join(model.__doc__.split()), ""]
    lines += ["| field | type | default | example | description |", "| --- | --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        section_only = _sections_in(field.annotation) and not _is_map(field.annotation)  # its fields have examples
        example = "" if section_only else _example(shipped.get(paths[0] + (name,)))
        lines.append(f"| `{name}` | {_field_type_text(field)} | {_default_text(field)} | "
                     f"{example} | {_clean(field.description)} |")
    return lines + [""]


def recipe_reference() -> str:
    from adaptctl.recipe.schema import EXTENDS_HELP, Recipe

    shipped = _shipped_values()
    sections = _walk(Recipe)
    methods = [m for m, paths in sections.items() if paths[0][:1] == ("method",) and len(paths[0]) == 2]
    lines = ["# Recipe reference", "",
             ("Every field a recipe may set, generated from the recipe's pydantic schema (`adaptctl/recipe/schema.py` and "
             "the method settings in `adaptctl/methods/`) by `scripts/gen_docs.py`; `adaptctl schema` prints the "
             "same as JSON Schema, and `adaptctl init --task TASK` a commented starter recipe. Unknown keys are "
             "errors with a \"did you mean\" suggestion; a value outside its range is an error at its line."), "",
             ("An example is the value a shipped recipe (`recipes/`, `bench/recipes/`) gives the field, where one "
             "sets it."), "",
             f"`extends`: {EXTENDS_HELP}", "", "## Sections", ""]
    lines += [f"- [{_path_text(paths[0]) if model is not Recipe else 'top level'}](#{_anchor(model)})"
              for model, paths in sections.items() if model not in methods]
    lines.append("")
    for model, paths in sections.items():
        if model in methods:
            continue
        lines += _section_lines(model, paths, shipped)
        if model is Recipe:
            lines += ["## `method` {#method}", "",
                      ("One of these sections, chosen by `name`. A recipe that `extends` another and names another "
                      "method gets a fresh section (no field of the other method is inherited)."), ""]
            for method in methods:
                lines += _section_lines(method, sections[method], shipped, level="###")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------- cli
def _clean(text: str | None) -> str:
    """Help text for a table cell: one line, no column break, no `<name>` read as an HTML tag."""
    return " ".join((text or "").split()).replace("|", "&#124;").replace("<", "&lt;")


def _option_default(option) -> str:
    if option.is_flag or option.default in (None, (), []) or option.multiple:
        return ""
    return f"`{option.default}`"


def _argument_name(argument) -> str:
    return argument.name.upper() + ("..." if argument.nargs == -1 else "")


def _type_name(option) -> str:
    """`int`, `str`, `float`, `Path`: typer's own spelling where it has one (its vendored click differs)."""
    bare = getattr(option, "bare_type", None)
    name = bare() if callable(bare) else getattr(getattr(option, "type", None), "name", "text")
    return name.removeprefix("list[").removesuffix("]")


def _command_lines(path: str, command) -> list[str]:
    # typer vendors its own click: tell arguments from options by click's own parameter kind
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option" and not p.hidden]
    usage = " ".join([path, "[OPTIONS]" if options else "", *(_argument_name(p) for p in arguments)])
    lines = [f"## `{path}`", "", _clean(command.help), "", "```", " ".join(usage.split()), "```", ""]
    if arguments:
        lines += ["| argument | description |", "| --- | --- |"]
        lines += [f"| `{_argument_name(p)}` | {_clean(getattr(p, 'help', ''))} |" for p in arguments]
        lines.append("")
    if options:
        lines += ["| option | type | default | description |", "| --- | --- | --- | --- |"]
        for option in options:
            names = " / ".join(f"`{n}`" for n in [*option.opts, *option.secondary_opts])
            kind = "" if option.is_flag else f"`{_type_name(option)}`" + (" (repeatable)" if option.multiple else "")
            lines.append(f"| {names} | {kind} | {_option_default(option)} | {_clean(option.help)} |")
        lines.append("")
    return lines


def cli_reference() -> str:
    import typer

    from adaptctl.cli import app

    root = typer.main.get_command(app)
    lines = ["# Command reference", "",
             ("Every command and option, generated from the Typer app (`adaptctl/cli.py`) by `scripts/gen_docs.py`; "
             "`adaptctl COMMAND --help` prints the same. In the order of a run: the stages, then the commands around "
             "them. Exit codes: 0 success, 1 wrong input, 2 usage, 3 the run failed, 130 interrupted "
             "([Exit codes](../exit-codes.md))."), ""]
    for name, command in root.commands.items():  # registration order: the stages first, as a run goes
        if hasattr(command, "commands"):  # a sub-app such as `runs`
            for sub, subcommand in command.commands.items():
                lines += _command_lines(f"adaptctl {name} {sub}", subcommand)
        else:
            lines += _command_lines(f"adaptctl {name}", command)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- bench results
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def _site_link(match: re.Match, source: Path, out: Path) -> str:
    """A results file's relative link, made to work from its copy: a page of the docs links there, an
    image beside the file is copied along, anything else becomes its text and repository path."""
    bang, text, target = match.groups()
    if re.match(r"[a-z]+:|#", target):
        return match.group(0)
    found = (source.parent / target.split("#")[0]).resolve()
    if found.is_relative_to(ROOT / "docs") and found.suffix == ".md":
        return f"{bang}[{text}]({Path('../..', found.relative_to(ROOT / 'docs')).as_posix()})"
    if bang and found.is_file():
        shutil.copyfile(found, out / found.name)
        return f"{bang}[{text}]({found.name})"
    where = found.relative_to(ROOT).as_posix() if found.is_relative_to(ROOT) else target
    return f"{text} (`{where}`{', not in the repository' if not found.exists() else ''})"


def bench_pages(docs: Path) -> None:
    out = docs / "reference" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for source in sorted((ROOT / "bench").glob("RESULTS*.md")):
        text = LINK.sub(lambda m, source=source: _site_link(m, source, out), source.read_text())
        (out / source.name).write_text(text)
        title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), source.stem)
        parts = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("## ")]
        rows.append(f"| [`bench/{source.name}`]({source.name}) | {_clean(title)} | {_clean('; '.join(parts))} |")
    (out / "index.md").write_text("\n".join([
        "# Every results file", "",
        ("Each `bench/RESULTS*.md` as the benchmark that measured it wrote it (copied here by `scripts/gen_docs.py`); "
        "what they say in short: [Benchmarks](../../benchmarks.md)."), "",
        "| file | title | sections |", "| --- | --- | --- |", *rows]) + "\n")


def main(docs: Path) -> None:
    reference = docs / "reference"
    reference.mkdir(parents=True, exist_ok=True)
    (reference / "recipe.md").write_text(recipe_reference())
    (reference / "cli.md").write_text(cli_reference())
    bench_pages(docs)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs")
