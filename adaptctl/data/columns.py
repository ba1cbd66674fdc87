"""Map raw columns onto the task's canonical columns through `data.*` templates.

A template is a column name (`text`) or a format string over columns
(`"{title}: {body}"`).  Missing columns are reported with the columns that do
exist, before any work is done.
"""

from __future__ import annotations

import string

from adaptctl.errors import UserError


def template_columns(template: str, columns: list[str]) -> list[str]:
    """The columns a template reads (a bare column name counts as one)."""
    if template in columns:
        return [template]
    fields = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    return fields or []


def check_columns(templates: dict[str, str], columns: list[str], source: str):
    for key, template in templates.items():
        used = template_columns(template, columns)
        missing = [c for c in used if c not in columns] or ([] if used else [template])
        if missing:
            raise UserError(f"data.{key}: column {', '.join(repr(m) for m in missing)} is not in {source}",
                            hint=f"the columns there are: {', '.join(columns)}; use a column name or a template such as '{{{columns[0]}}}'")


def render(template: str, row: dict) -> str:
    if template in row:
        value = row[template]
        return "" if value is None else str(value)
    return template.format_map({k: "" if v is None else v for k, v in row.items()})
