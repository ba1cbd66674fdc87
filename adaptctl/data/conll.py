"""CoNLL files (`source.format: conll`, or a `.conll` file): one word per line with its tag in the last
column, a blank line between sentences, as CoNLL-2003 and WNUT 2017 are written.

Columns are separated by a tab where the line has one, else by spaces; the word is the first column and the
tag the last (CoNLL-2003's POS and chunk columns between them are not read).  `-DOCSTART-` lines mark
documents and are skipped.  Each sentence is one row: `tokens` (its words) and `tags` (their tags), and
its place is the line of its first word.  What the tags mean (BIO entity tags for token-classification) is
the task's to check.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from adaptctl.core.errors import UserError

COLUMNS = ("tokens", "tags")
HINT = "CoNLL: one word and its tag per line (separated by a tab or spaces), a blank line between sentences"
DOCUMENT_MARK = "-DOCSTART-"


def sentences(path: Path) -> Iterator[tuple[int, list[str], list[str]]]:
    """(line of the first word, words, tags) of every sentence in the file, in order."""
    start, words, tags = 0, list[str](), list[str]()
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            fields = line.rstrip("\r\n").split("\t") if "\t" in line.strip() else line.split()
            if not line.strip() or fields[0] == DOCUMENT_MARK:
                if words:
                    yield start, words, tags
                start, words, tags = 0, [], []
                continue
            if len(fields) < 2 or not fields[-1].strip():
                raise UserError(f"{path}:{number}: the word {fields[0].strip()!r} has no tag column", hint=HINT)
            start = start or number
            words.append(fields[0].strip())
            tags.append(fields[-1].strip())
    if words:
        yield start, words, tags


def read(files: list[Path]):
    """The sentences of every file as a datasets.Dataset with COLUMNS (lists of strings)."""
    from datasets import Dataset, Features, Sequence, Value

    rows: dict[str, list] = {name: [] for name in COLUMNS}
    for path in files:
        for _, words, tags in sentences(path):
            rows["tokens"].append(words)
            rows["tags"].append(tags)
    features = Features({name: Sequence(Value("string")) for name in COLUMNS})
    return Dataset.from_dict(rows, features=features)


def places(files: list[Path]) -> Iterator[str]:
    """`file:line` of each row (sentence), in read order."""
    for path in files:
        for start, _, _ in sentences(path):
            yield f"{path}:{start}"


def first_rows(path: Path, count: int) -> tuple[list[dict], list[str]]:
    """The first `count` sentences as rows, and their places (for `adaptctl validate`)."""
    rows: list[dict] = []
    where: list[str] = []
    for start, words, tags in sentences(path):
        if len(rows) == count:
            break
        rows.append({"tokens": words, "tags": tags})
        where.append(f"{path}:{start}")
    return rows, where
