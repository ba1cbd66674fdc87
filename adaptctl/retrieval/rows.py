"""What prepare adds to each question row of a recipe with data.retrieval, before the prompt is rendered:

- `passages`: the top k passages for the row's query, written out ("[p12] text", blank lines between),
  which data.prompt reads;
- carried columns (retrieval/__init__.py) that evaluate scores retrieval with and predictions cite: the
  ids shown, the ids ranked first (to rank 10), the gold passage's id, the query, the closed-book prompt.

RAFT (Zhang et al. 2024), with `oracle_fraction`: training rows get a second view in which a seeded
`oracle_fraction` of them show the gold passage among `distractors` retrieved passages that are not it
(in a seeded order, so the gold one is not always first), and the others show distractors only, as many
as the oracle rows show passages; evaluation and predict rows always show the top k, as retrieved.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adaptctl.core import console
from adaptctl.core.errors import UserError
from adaptctl.retrieval import CLOSED_BOOK, GOLD, PASSAGES, QUERY, RANKED, ROW, SHOWN
from adaptctl.retrieval.quality import MRR_DEPTH

if TYPE_CHECKING:
    from adaptctl.retrieval.index import Index

FIELD = ("data", "retrieval")


@dataclass
class Retriever:
    """An index and its embedder, with the recipe's k and passage format: one search for many queries."""
    index: Index             # index.Index
    model: Any               # the SentenceTransformer that embedded the passages
    k: int
    passage: str             # how one passage is written ("[{id}] {text}")
    batch_size: int

    def rank(self, queries: list[str], depth: int) -> list[list[int]]:
        from adaptctl.retrieval.embedder import encode

        return self.index.search(encode(self.model, queries, self.batch_size), depth) if queries else []

    def written(self, numbers: list[int]) -> str:
        from adaptctl.data.columns import render

        return "\n\n".join(render(self.passage, {"id": self.index.ids[n], "text": self.index.texts[n]}) for n in numbers)


@dataclass
class Views:
    shown: Any               # datasets.Dataset: each row with its top k passages (evaluate's and predict's view)
    raft: Any | None         # the same rows as RAFT trains on them (None without oracle_fraction)


def views(ds, table, retriever: Retriever, settings, prompt: str, seed: int, where) -> Views:
    """`ds` (rows of `table`'s file) with the passages and carried columns; `where(field)` locates recipe fields."""
    if PASSAGES in ds.column_names:
        console.warn(f"prepare: {table.name} has a column {PASSAGES!r}; the retrieved passages replace it in the prompt")
    rows = ds.to_list()
    queries = _rendered(rows, settings.query, table, where((*FIELD, "query")))
    raft = settings.oracle_fraction is not None
    distractors = settings.distractors if settings.distractors is not None else settings.k - 1
    depth = max(settings.k, MRR_DEPTH, distractors + 2 if raft else 0)
    console.info(f"prepare: retrieving {settings.k} of {len(retriever.index.ids)} passages for {len(rows)} rows of {table.name}")
    ranked = retriever.rank(queries, depth)
    gold = _gold(rows, settings, retriever.index, table, where)
    closed = [_closed_book(row, settings, prompt, table, i, where) for i, row in enumerate(rows)]
    ids = retriever.index.ids
    carried = {QUERY: queries, RANKED: [[ids[n] for n in found] for found in ranked],
               GOLD: [ids[n] if n is not None else "" for n in gold], CLOSED_BOOK: closed, ROW: list(range(len(rows)))}
    shown = [found[:settings.k] for found in ranked]
    result = _with_columns(ds, {**carried, **_passages(shown, retriever)})
    if not raft:
        return Views(result, None)
    mixed = raft_passages(ranked, gold, settings.oracle_fraction, distractors, seed)
    return Views(result, _with_columns(ds, {**carried, **_passages(mixed, retriever)}))


def swap_in(train, raft):
    """The training split's rows as RAFT shows them: `raft` holds the same file rows (carried ROW) in RAFT's
    view; the split's order (shuffled by max_train_samples) is kept."""
    place = {row: i for i, row in enumerate(raft[ROW])}
    return raft.select([place[row] for row in train[ROW]])


def raft_passages(ranked: list[list[int]], gold: list[int | None], oracle_fraction: float, distractors: int,
                  seed: int) -> list[list[int]]:
    """Each training row's passages as RAFT shows them: with probability oracle_fraction the gold passage and
    `distractors` others, else distractors + 1 others (the best-ranked passages that are not the gold one,
    the hardest to tell from it); in a seeded order.  A row whose gold passage is unknown gets distractors."""
    rng = random.Random(seed)
    mixed = []
    for found, answer in zip(ranked, gold):
        oracle = rng.random() < oracle_fraction and answer is not None
        others = [n for n in found if n != answer]
        chosen = ([answer] + others[:distractors]) if oracle and answer is not None else others[:distractors + 1]
        rng.shuffle(chosen)
        mixed.append(chosen)
    return mixed


def _passages(numbers: list[list[int]], retriever: Retriever) -> dict:
    ids = retriever.index.ids
    return {PASSAGES: [retriever.written(found) for found in numbers], SHOWN: [[ids[n] for n in found] for found in numbers]}


def _with_columns(ds, columns: dict):
    for name, values in columns.items():
        if name in ds.column_names:
            ds = ds.remove_columns(name)
        ds = ds.add_column(name, values)
    return ds


def _rendered(rows: list[dict], template: str, table, field: str) -> list[str]:
    from adaptctl.data.columns import TemplateRowError, render

    texts = []
    for index, row in enumerate(rows):
        try:
            texts.append(render(template, row).strip())
        except TemplateRowError as err:
            raise UserError(f"{table.where(index)}: {field}: {err.message}", hint=err.hint) from None
    return texts


def _gold(rows: list[dict], settings, index, table, where) -> list[int | None]:
    """Each row's gold passage number: data.retrieval.gold rendered, found as an id, else as a passage's text."""
    if settings.gold is None:
        return [None] * len(rows)
    by_id = {passage_id: n for n, passage_id in enumerate(index.ids)}
    by_text = {text: n for n, text in enumerate(index.texts)}
    named = _rendered(rows, settings.gold, table, where((*FIELD, "gold")))
    found = [by_id.get(value, by_text.get(value)) if value else None for value in named]
    missing = sum(1 for value, n in zip(named, found) if value and n is None)
    if missing:
        console.warn(f"prepare: the gold passage of {missing} of {len(rows)} rows of {table.name} is no passage of "
                     "the corpus (by id or whole text); those rows count as having none")
    return found


def _closed_book(row: dict, settings, prompt: str, table, index: int, where) -> str:
    """The prompt without passages: data.retrieval.closed_book_prompt, else data.prompt with them empty."""
    from adaptctl.data.columns import TemplateRowError, render

    template = settings.closed_book_prompt or prompt
    try:
        return render(template, {**row, PASSAGES: ""})
    except TemplateRowError as err:
        field = (*FIELD, "closed_book_prompt") if settings.closed_book_prompt else ("data", "prompt")
        raise UserError(f"{table.where(index)}: {where(field)}: {err.message}", hint=err.hint) from None
