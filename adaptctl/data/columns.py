"""Map raw columns onto the task's canonical columns through `data.*` templates.

Two syntaxes:
- a column name (`text`) or a format string over columns (`"{title}: {body}"`), as str.format
  reads it: each field is a column; a list or an object in such a column is refused, not written
  as its repr.
- a Jinja template, any template holding `{{`, `{%` or `{#` (`"{{ abstract | join(' ') }}"`,
  `"{{ answers.text[0] }}"`): indexing, filters and loops over list and object columns, rendered by
  Jinja2's sandbox (a recipe may come from someone else) with StrictUndefined, so that a missing
  key or index is an error instead of an empty string.

Missing columns are reported with the columns that do exist, before any work is done.
"""

from __future__ import annotations

import functools
import re
import string
from typing import Callable, TypeVar

from adaptctl.data.limits import MAX_RENDER_CHARS, check_rendered, time_limit
from adaptctl.core.errors import UserError

TEMPLATE_HINT = ("write a column name, fields in braces such as '{title}: {body}', or a Jinja template such as "
                 "\"{{ title }}: {{ body | join(' ') }}\" (a template with '{{', '{%' or '{#' is Jinja)")
JINJA_HINT = ("a column is {{ name }}, a list item {{ name[0] }}, a key {{ name.key }}, a default {{ name | default('') }}; "
              "see https://jinja.palletsprojects.com/en/stable/templates/")
_JINJA_MARKS = ("{{", "{%", "{#")
# `{name}`, `{name[0]}`, `{name:>5}` left in a Jinja template's text: the other syntax, printed as it is
_FORMAT_FIELD = re.compile(r"\{([A-Za-z_]\w*)(?:[\[.!:][^{}]*)?\}")


class TemplateRowError(UserError):
    """A row the template cannot render; raised without a place, which the caller finds (prepare scans
    for the row only when this happens)."""

    def __init__(self, template: str, message: str, hint: str):
        super().__init__(message, hint=hint)
        self.template = template


class RowError(UserError):
    """A row a task cannot read (a conversation with an unknown role), raised with the row's index in the
    file's rows; prepare turns the index into `file:line`."""

    def __init__(self, index: int, message: str, hint: str):
        super().__init__(message, hint=hint)
        self.index = index


def is_jinja(template: str) -> bool:
    return any(mark in template for mark in _JINJA_MARKS)


# ------------------------------------------------------------ checks without data
def template_problem(template: str) -> str | None:
    """What makes `template` unusable (a syntax error of either syntax), or None.  Needs no data, so
    `adaptctl validate` runs it on the recipe's templates."""
    return _jinja_problem(template) if is_jinja(template) else _format_problem(template)


def _format_problem(template: str) -> str | None:
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:  # "Single '{' encountered in format string", "expected '}' before end of string"
        return str(exc)
    for _, name, spec, conversion in fields:
        if name == "" or (name is not None and name.isdigit()):
            return "a field in braces needs a column name ('{}' and '{0}' name none)"
        if name is not None and re.search(r"[\[.]", name):  # str.format would index, but no column is so named
            return (f"'{{{name}}}' indexes a column, which needs a Jinja template: "
                    f"'{{{{ {name} }}}}' (or a filter such as '{{{{ {_column(name)} | join(' ') }}}}')")
        if conversion not in (None, "r", "s", "a"):
            return f"'!{conversion}' is not a conversion (use !r, !s or !a, or none)"
        if spec and any(int(n) > MAX_RENDER_CHARS for n in re.findall(r"\d+", spec)):
            return f"'{{{name}:{spec}}}' asks for a width or precision over {MAX_RENDER_CHARS:,} characters"
    return None


def _jinja_problem(template: str) -> str | None:
    from jinja2 import TemplateError, nodes

    try:
        tree = _environment().parse(template)
        _compiled(template)  # an unknown filter is found when compiling, not when parsing
    except TemplateError as exc:
        where = f" (line {exc.lineno} of the template)" if getattr(exc, "lineno", None) and "\n" in template else ""
        return f"Jinja syntax error{where}: {exc.message or exc}"
    for data in tree.find_all(nodes.TemplateData):
        if match := _FORMAT_FIELD.search(data.data):
            return (f"'{match.group(0)}' would be printed as it is: a Jinja template names a column as "
                    f"'{{{{ {match.group(1)} }}}}' (to keep the braces, write \"{{{{ '{match.group(0)}' }}}}\")")
    return None


def _column(field_name: str) -> str:
    return re.split(r"[\[.]", field_name, maxsplit=1)[0]


# ---------------------------------------------------------------- columns read
def template_columns(template: str, columns: list[str]) -> list[str]:
    """The columns a template reads (a bare column name counts as one)."""
    if template in columns:
        return [template]
    if template_problem(template):
        return []
    if is_jinja(template):
        return _jinja_columns(template)
    return [_column(name) for name in _format_fields(template)]


@functools.lru_cache(maxsize=64)
def _jinja_columns_cached(template: str) -> tuple[str, ...]:
    from jinja2 import meta

    env = _environment()
    names = meta.find_undeclared_variables(env.parse(template)) - set(env.globals)  # range, dict, ...: not columns
    return tuple(sorted(names))


def _jinja_columns(template: str) -> list[str]:
    return list(_jinja_columns_cached(template))


def numbered_columns(template: str | None, columns: list[str]) -> list[str]:
    """The template once per numbered column (['summary1', 'summary2', ...], or [' {answer1}', ...]) when it
    reads one column the file lacks and numbered ones exist (the DialogSum test file, SQuAD's answers read
    by data/squad.py): the first is the response, all of them references (tasks/causal_lm.py)."""
    if template is None:
        return []
    bare = re.fullmatch(r"\w+", template)
    used = [template] if bare else re.findall(r"\{\{\s*(\w+)\s*\}\}|\{(\w+)\}", template)
    names = {name if isinstance(name, str) else (name[0] or name[1]) for name in used}
    if len(names) != 1 or (name := names.pop()) in columns:
        return []
    numbered = sorted((c for c in columns if re.fullmatch(rf"{re.escape(name)}\d+", c)), key=lambda c: int(c[len(name):]))
    if bare:
        return numbered
    placeholder = re.compile(rf"\{{\{{\s*{re.escape(name)}\s*\}}\}}|\{{{re.escape(name)}\}}")
    return [placeholder.sub(_literal("{" + column + "}"), template) for column in numbered]


def _literal(text: str) -> Callable[[re.Match], str]:
    """A re.sub replacement taken as it is (a string one would read backslashes in it)."""
    return lambda _: text


Key = TypeVar("Key")  # a data field's name, or its path as a tuple (preflight)


def column_problems(templates: dict[Key, str], columns: list[str], source: str) -> list[tuple[Key, str, str | None]]:
    """(data key, message, hint) for each template that is unusable or reads a column not in `columns`."""
    problems: list[tuple[Key, str, str | None]] = []
    for key, template in templates.items():
        if template not in columns and (problem := template_problem(template)):
            problems.append((key, f"template {template!r}: {problem}", TEMPLATE_HINT))
            continue
        used = template_columns(template, columns)
        missing = [c for c in used if c not in columns] or ([] if used else [template])
        if missing:
            example = f"'{{{columns[0]}}}'" if columns else "'{text}'"
            problems.append((key, f"column {', '.join(repr(m) for m in missing)} is not in {source}",
                             f"the columns there are: {', '.join(columns)}; use a column name or a template such as {example}"))
    return problems


def check_columns(templates: dict[str, str], columns: list[str], source: str):
    for key, message, hint in column_problems(templates, columns, source)[:1]:
        raise UserError(f"data.{key}: {message}", hint=hint)


# ------------------------------------------------------------ evaluate.slices
# prepare renders each evaluate.slices template into a column of this prefix beside the task's canonical
# columns; the tasks' column mapping keeps them, and the Trainer and evaluation loops read only the
# model's inputs (tokens.MODEL_INPUTS), so the model never sees them.
SLICE_PREFIX = "slice:"
# data.retrieval's columns (the passage ids a prompt showed, the ranking, the gold passage): carried the same
# way, for evaluate's retrieval figures (adaptctl/retrieval/rows.py).
RETRIEVAL_PREFIX = "retrieval:"
CARRIED_PREFIXES = (SLICE_PREFIX, RETRIEVAL_PREFIX)
PASSAGES = "passages"   # the column data.retrieval adds for data.prompt to read: the retrieved passages


def slice_column(template: str) -> str:
    return SLICE_PREFIX + template


def slice_columns(columns: list[str]) -> list[str]:
    """The columns prepare added beside the data's (evaluate.slices, data.retrieval), which every task's rows
    carry through."""
    return [c for c in columns if c.startswith(CARRIED_PREFIXES)]


def without_slices(columns: list[str]) -> list[str]:
    """The columns a task's mapping replaces: all but the carried ones, which pass through: the slice
    columns, retrieval's, and the source row (data/passthrough.py SOURCE_ROW, for evaluate/predictions.jsonl)."""
    return [c for c in columns if not c.startswith((*CARRIED_PREFIXES, "source:"))]


# ------------------------------------------------------------------- rendering
def render(template: str, row: dict) -> str:
    if template in row:
        return str(_plain(row[template], template, template))
    if is_jinja(template):
        return _render_jinja(template, row)
    values = {name: _plain(row[name], name, template) for name in _format_fields(template) if name in row}
    try:
        if _format_problem(template):  # a width of billions (template_problem refuses it at validate too)
            raise ValueError(_format_problem(template))
        return check_rendered(template.format_map({**row, **values}))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:  # e.g. '{text:d}' on a string
        raise TemplateRowError(template, f"template {template!r} cannot format a row: {type(exc).__name__}: {exc}",
                               TEMPLATE_HINT) from None


def _plain(value, column: str, template: str):
    """A `{col}` field's value: text or a number.  A list or an object would be trained on as its Python
    repr (`['We study…', …]`), which no one means: refuse, saying how Jinja picks what is meant."""
    if value is None:
        return ""
    if isinstance(value, list):
        raise TemplateRowError(template, f"column {column!r} holds a list, not text",
                               f"join or pick its items with a Jinja template: \"{{{{ {column} | join(' ') }}}}\" or "
                               f"'{{{{ {column}[0] }}}}'; or name a column of plain text")
    if isinstance(value, dict):
        key = next((k for k in value if isinstance(k, str) and k.isidentifier()), "key")
        raise TemplateRowError(template, f"column {column!r} holds an object, not text",
                               f"pick a field with a Jinja template: '{{{{ {column}.{key} }}}}' (its keys: "
                               f"{', '.join(map(str, value)) or 'none'}); or name a column of plain text")
    return value  # a number keeps its type, for a format spec such as {score:.2f}


@functools.lru_cache(maxsize=64)
def _format_fields(template: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in string.Formatter().parse(template) if name)


def _render_jinja(template: str, row: dict) -> str:
    try:
        with time_limit():  # a template is code: nested loops must not hang prepare or validate
            return _bounded_render(_compiled(template), row)
    except Exception as exc:  # a template is the user's code: whatever it raises on a row is the user's to fix
        message = getattr(exc, "message", None) or str(exc)
        raise TemplateRowError(template, f"template {template!r} cannot render a row: {type(exc).__name__}: {message}",
                               JINJA_HINT) from None


def _bounded_render(compiled, row: dict) -> str:
    """The template's output, streamed and cut off past MAX_RENDER_CHARS (a loop printing for ever)."""
    parts, size = [], 0
    for part in compiled.generate(row):
        size += len(part)
        if size > MAX_RENDER_CHARS:
            raise ValueError(f"the rendered text is longer than {MAX_RENDER_CHARS:,} characters")
        parts.append(part)
    return "".join(parts)


@functools.lru_cache(maxsize=1)
def _environment():
    """Jinja2's immutable sandbox: a recipe may come from anyone, and its templates must not reach
    Python internals or change the rows, nor build strings of billions of characters in one step
    (data.limits).  Imported only when a template uses Jinja."""
    from jinja2 import StrictUndefined

    return _bounded_sandbox()(
        undefined=StrictUndefined,        # a missing key or index is an error, not an empty string
        keep_trailing_newline=True,       # "...\nSummary:\n" keeps the separator a prompt ends with
        autoescape=False,                 # text for a tokenizer, not HTML
        finalize=lambda value: "" if value is None else value)  # an empty cell renders as '', as in {col}


def _bounded_sandbox():
    """The immutable sandbox, with the one-step allocations it lets through bounded: `'x' * 10**10`,
    `2 ** 10**9`, and a method or filter given a size of billions (`'x'.ljust(10**10)`, `center(10**10)`)."""
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def check_sizes(args, kwargs):
        if any(isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_RENDER_CHARS
               for a in (*args, *kwargs.values())):
            raise SecurityError(f"a size over {MAX_RENDER_CHARS:,} given to a method or filter")

    def bounded_filter(function):
        @functools.wraps(function)
        def call(*args, **kwargs):
            check_sizes(args[1:], kwargs)  # the first is the value filtered
            return function(*args, **kwargs)
        return call

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def __init__(self, **options):
            super().__init__(**options)
            self.filters = {name: bounded_filter(f) for name, f in self.filters.items()}

        def call_binop(self, context, operator, left, right):
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > 64 and \
                    isinstance(left, (int, float)) and abs(left) > 1:
                raise SecurityError("a power that large is no text")
            if operator == "*" and any(isinstance(a, (str, list, tuple)) for a in (left, right)):
                count = right if isinstance(left, (str, list, tuple)) else left
                sequence = left if isinstance(left, (str, list, tuple)) else right
                if isinstance(count, int) and len(sequence) * count > MAX_RENDER_CHARS:
                    raise SecurityError(f"a repetition over {MAX_RENDER_CHARS:,} items")
            return super().call_binop(context, operator, left, right)

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's own signature)
            check_sizes(args, kwargs)
            return super().call(__context, __obj, *args, **kwargs)

    return BoundedSandbox


@functools.lru_cache(maxsize=64)
def _compiled(template: str):
    return _environment().from_string(template)
