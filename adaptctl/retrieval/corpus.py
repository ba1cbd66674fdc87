"""The corpus (`data.retrieval.corpus`) read into passages: each row's text and id by the corpus's templates,
rows with the same passage merged.

Ids default to p1, p2, ... in the order passages first appear, so that a prompt spends few tokens on them;
`corpus.id` gives ids of the user's own.  A SQuAD-style file is read as prepare reads one (one row per
question, data/squad.py), so its paragraphs become the corpus, each once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from adaptctl.core import console
from adaptctl.core.errors import UserError

FIELD = ("data", "retrieval", "corpus")


@dataclass(frozen=True)
class Passages:
    ids: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def digest(self) -> str:
        """The content of the passages: what an index was built from."""
        digest = hashlib.sha256()
        for passage_id, text in zip(self.ids, self.texts):
            digest.update(passage_id.encode() + b"\0" + text.encode() + b"\0")
        return digest.hexdigest()


def read_corpus(corpus, base_dir: Path, where=lambda field: ".".join(field)) -> Passages:
    """The passages of `corpus` (recipe.Corpus); `where(field)` names a recipe field in messages."""
    from adaptctl.data import squad
    from adaptctl.data.columns import column_problems
    from adaptctl.data.readers import read_table

    try:
        table = read_table(corpus, base_dir)
    except UserError as err:
        raise UserError(f"{where(FIELD)}: {err.message}", hint=err.hint) from None
    rows = squad.flatten_records(table.ds) if squad.is_nested(table.ds.column_names) else table.ds
    columns = list(rows[0]) if isinstance(rows, list) else table.ds.column_names
    templates = {"text": corpus.text, **({"id": corpus.id} if corpus.id is not None else {})}
    for name, message, hint in column_problems(templates, columns, table.name)[:1]:
        raise UserError(f"{where((*FIELD, name))}: {message}", hint=hint)
    return _merged(rows, templates, table, where)


def _merged(rows, templates: dict, table, where) -> Passages:
    from adaptctl.data.columns import TemplateRowError, render

    ids, texts, seen, empty = list[str](), list[str](), dict[str, int](), 0
    for index, row in enumerate(rows):
        try:
            text = render(templates["text"], row).strip()
            given = render(templates["id"], row).strip() if "id" in templates else None
        except TemplateRowError as err:
            raise UserError(f"{table.where(index)}: {where(FIELD)}: {err.message}", hint=err.hint) from None
        if not text:
            empty += 1
            continue
        key = given if given is not None else text
        if key in seen:
            if texts[seen[key]] != text:  # one id, two texts: which one would an answer cite?
                raise UserError(f"{table.where(index)}: {where((*FIELD, 'id'))}: passage id {given!r} names two "
                                "different texts", hint="give every passage its own id (corpus.id), or merge the rows")
            continue
        seen[key] = len(ids)
        ids.append(given if given is not None else f"p{len(ids) + 1}")
        texts.append(text)
    if not ids:
        raise UserError(f"{where(FIELD)}: {table.name} has no passage text", hint="check data.retrieval.corpus.text")
    if empty:
        console.warn(f"prepare: {empty} rows of {table.name} have an empty passage text and were left out")
    if given_ids := [i for i in ids if not i]:
        raise UserError(f"{where((*FIELD, 'id'))}: {len(given_ids)} passages have an empty id",
                        hint="every passage needs an id; leave corpus.id unset for p1, p2, ...")
    return Passages(ids, texts)


def corpus_hash(corpus, base_dir: Path, where=lambda field: ".".join(field)) -> str:
    """The content hash of the corpus files (prepare's key): an edited corpus re-prepares."""
    from adaptctl.data.readers import cannot_read, source_files
    from adaptctl.core.rundir import file_hash, json_hash

    try:
        files = source_files(corpus, base_dir)
        return json_hash({str(f): file_hash(f) for f in files}) if files else corpus.path
    except UserError as err:
        raise UserError(f"{where(FIELD)}: {err.message}", hint=err.hint) from None
    except OSError as exc:
        raise cannot_read(Path(corpus.path), exc) from None
