"""evaluate.general: the general (out-of-domain) text a forgetting check scores, read with the same
readers and templates as data.source.

Rows are drawn with the recipe's seed rather than taken from the top, because data files are often
sorted (by label, by date) and the first rows would be one corner of the text.
"""

from __future__ import annotations

from pathlib import Path

from adaptctl.data.columns import TemplateRowError, column_problems, render
from adaptctl.core.errors import UserError

FIELD = ("evaluate", "general")


def dotted(field: tuple) -> str:
    return ".".join(field)


def read_general_texts(general, base_dir: Path, seed: int, where=dotted) -> list[str]:
    """Up to general.max_examples non-empty texts of general.source, rendered by general.text.
    where: a field's place in the recipe for messages (the stage's `FILE:LINE:COL: field`)."""
    from adaptctl.data.readers import private_cache

    with private_cache():  # the raw rows stay out of datasets' shared cache (readers.private_cache)
        return _read_general_texts(general, base_dir, seed, where)


def _read_general_texts(general, base_dir: Path, seed: int, where) -> list[str]:
    from adaptctl.data.readers import read_table

    try:
        table = read_table(general.source, base_dir)
    except UserError as err:  # missing, empty, unreadable: said at the field that names the file
        raise UserError(f"{where((*FIELD, 'source'))}: {err.message}", hint=err.hint, details=err.details) from None
    columns = table.ds.column_names
    for _, message, hint in column_problems({"text": general.text}, columns, table.name)[:1]:
        raise UserError(f"{where((*FIELD, 'text'))}: {message}", hint=hint)
    ds = table.ds.shuffle(seed=seed) if len(table.ds) > general.max_examples else table.ds
    texts = []
    for row in ds:  # stops at max_examples: a large file is not rendered whole
        try:
            text = render(general.text, row).strip()
        except TemplateRowError as err:
            raise UserError(f"{table.name}: {dotted((*FIELD, 'text'))}: {err.message}", hint=err.hint) from None
        if text:
            texts.append(text)
        if len(texts) == general.max_examples:
            break
    if not texts:
        raise UserError(f"{table.name}: every row has an empty {dotted((*FIELD, 'text'))} ({general.text!r})",
                        hint=f"check it against the file's columns: {', '.join(columns)}")
    return texts
