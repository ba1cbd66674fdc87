"""Generate the docs site's reference pages from the code, so that neither can drift from it.

    python scripts/gen_docs.py DOCS_DIR

writes DOCS_DIR/reference/recipe.md (every recipe field from the pydantic schema: type, default,
allowed values, description, an example) and DOCS_DIR/reference/cli.md (every command and option
from the Typer app).  `make docs` runs it before `mkdocs build`; the generated folder is not
committed (docs/reference/ is in .gitignore).
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------------- recipe
def _type_text(annotation) -> str:
    """A reader's spelling of a field type: `int`, `list[str]`, `"a" | "b"`, `Train` (a section)."""
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(f'`{v}`' for v in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_text(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        return f"list of {_type_text(typing.get_args(annotation)[0])}"
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"map of {_type_text(key)} to {_type_text(value)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return f"`{getattr(annotation, '__name__', str(annotation))}`"


def _sections_in(annotation) -> list[type[BaseModel]]:
    """The pydantic sections a field's type holds (through unions, lists and maps)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [s for arg in typing.get_args(annotation) for s in _sections_in(arg)]


def _default_text(field) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:  # a factory that takes the validated data
            return "(computed)"
        return f"`{value.model_dump(exclude_defaults=True) if isinstance(value, BaseModel) else value}`"
    return "`null`" if field.default is None else f"`{field.default}`"


def _example(name: str, field) -> str:
    """One line of YAML for the field: its default, else the first value it allows, else a placeholder."""
    import json

    annotation = field.annotation
    literal = next((a for a in [annotation, *typing.get_args(annotation)] if typing.get_origin(a) is typing.Literal), None)
    if not field.is_required() and field.default_factory is None and field.default is not None:
        value = field.default
    elif literal is not None:
        value = typing.get_args(literal)[0]
    elif _sections_in(annotation):
        return f"{name}: {{...}}   # see {_sections_in(annotation)[0].__name__}"
    else:
        value = "..."
    return f"{name}: {json.dumps(value) if isinstance(value, str) else json.dumps(value)}"


def _section_table(model: type[BaseModel]) -> list[str]:
    lines = [f"## {model.__name__}", ""]
    if model.__doc__ and "pydantic" not in model.__doc__.lower():
        lines += [" ".join(model.__doc__.split()), ""]
    lines += ["| field | type | default | description |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        description = " ".join((field.description or "").split()).replace("|", "\\|")
        lines.append(f"| `{name}` | {_type_text(field.annotation).replace('|', '&#124;')} | "
                     f"{_default_text(field).replace('|', '&#124;')} | {description} |")
    example = [_example(name, field) for name, field in model.model_fields.items()][:6]
    lines += ["", "```yaml", *example, "```", ""]
    return lines


def recipe_reference() -> str:
    from adaptctl.recipe import EXTENDS_HELP, Recipe

    lines = ["# Recipe reference", "",
             "Generated from the recipe's pydantic schema (`adaptctl/recipe.py` and the method settings in",
             "`adaptctl/methods/`) by `scripts/gen_docs.py`; `adaptctl schema` prints the same as JSON Schema.",
             "Unknown keys are errors with a \"did you mean\" suggestion.", "",
             f"`extends`: {EXTENDS_HELP}", ""]
    seen, queue = set(), [Recipe]
    while queue:
        model = queue.pop(0)
        if model in seen:
            continue
        seen.add(model)
        lines += _section_table(model)
        for field in model.model_fields.values():
            queue += [s for s in _sections_in(field.annotation) if s not in seen]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------- cli
def _command_lines(path: str, command) -> list[str]:
    lines = [f"## `{path}`", "", " ".join((command.help or "").split()), ""]
    # typer vendors its own click: tell arguments from options by click's own parameter kind
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option" and not p.hidden]
    if arguments:
        lines += ["Arguments: " + ", ".join(f"`{p.name.upper()}`" for p in arguments), ""]
    if options:
        lines += ["| option | default | description |", "| --- | --- | --- |"]
        for option in options:
            names = " / ".join(f"`{n}`" for n in [*option.opts, *option.secondary_opts])
            default = "" if option.default in (None, False, ()) or option.is_flag and not option.default else f"`{option.default}`"
            lines.append(f"| {names} | {default} | {' '.join((option.help or '').split()).replace('|', '&#124;')} |")
        lines.append("")
    return lines


def cli_reference() -> str:
    import typer

    from adaptctl.cli import app

    root = typer.main.get_command(app)
    lines = ["# Command reference", "",
             "Generated from the Typer app (`adaptctl/cli.py`) by `scripts/gen_docs.py`; `adaptctl COMMAND --help`",
             "prints the same.", "", "Every stage command takes `--run-dir`, `--set key.path=value`, `--json`",
             "and `--quiet`. Exit codes: 0 success, 1 wrong input, 2 usage, 3 the run failed, 130 interrupted.", ""]
    for name, command in sorted(root.commands.items()):
        if hasattr(command, "commands"):  # a sub-app such as `runs`
            for sub, subcommand in sorted(command.commands.items()):
                lines += _command_lines(f"adaptctl {name} {sub}", subcommand)
        else:
            lines += _command_lines(f"adaptctl {name}", command)
    return "\n".join(lines) + "\n"


def main(out: Path) -> None:
    reference = out / "reference"
    reference.mkdir(parents=True, exist_ok=True)
    (reference / "recipe.md").write_text(recipe_reference())
    (reference / "cli.md").write_text(cli_reference())


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs")
