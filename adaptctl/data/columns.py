"""Map raw columns onto the task's canonical columns through `data.*` templates.

A template is a column name (`text`) or a format string over columns
(`"{title}: {body}"`).  Missing columns are reported with the columns that do
exist, before any work is done.
"""

from __future__ import annotations

import string

from adaptctl.errors import UserError


TEMPLATE_HINT = "write a column name, or fields in braces such as '{title}: {body}'; a literal brace is '{{' or '}}'"


def template_problem(template: str) -> str | None:
    """What makes `template` unusable as a format string (an unbalanced brace, a bad !conversion), or
    None.  Needs no data, so `adaptctl validate` runs it on the recipe's templates."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:  # "Single '{' encountered in format string", "expected '}' before end of string"
        return str(exc)
    for _, name, _, conversion in fields:
        if name == "" or (name is not None and name.isdigit()):
            return "a field in braces needs a column name ('{}' and '{0}' name none)"
        if conversion not in (None, "r", "s", "a"):
            return f"'!{conversion}' is not a conversion (use !r, !s or !a, or none)"
    return None


def template_columns(template: str, columns: list[str]) -> list[str]:
    """The columns a template reads (a bare column name counts as one)."""
    if template in columns:
        return [template]
    if template_problem(template):
        return []
    fields = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    return fields or []


def check_columns(templates: dict[str, str], columns: list[str], source: str):
    for key, template in templates.items():
        if template not in columns and (problem := template_problem(template)):
            raise UserError(f"data.{key}: template {template!r}: {problem}", hint=TEMPLATE_HINT)
        used = template_columns(template, columns)
        missing = [c for c in used if c not in columns] or ([] if used else [template])
        if missing:
            raise UserError(f"data.{key}: column {', '.join(repr(m) for m in missing)} is not in {source}",
                            hint=f"the columns there are: {', '.join(columns)}; use a column name or a template such as '{{{columns[0]}}}'")


def render(template: str, row: dict) -> str:
    if template in row:
        value = row[template]
        return "" if value is None else str(value)
    try:
        return template.format_map({k: "" if v is None else v for k, v in row.items()})
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:  # e.g. '{text:d}' on a string
        raise UserError(f"template {template!r} cannot format a row: {type(exc).__name__}: {exc}",
                        hint=TEMPLATE_HINT) from None
