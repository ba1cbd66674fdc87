"""data.retrieval.hybrid: a BM25 ranking (bm25s, Okapi as Lucene scores it, English stop words left out) fused
with the dense ranking by reciprocal-rank fusion (Cormack et al. 2009): a passage's score is the sum over
the rankings of 1 / (rrf_k + its rank there).  Measured on XQuAD (bench/RESULTS-kbqa.md): it finds the
passage that shares the question's rare words (names, numbers, terms) that a small embedder ranks lower.

The BM25 index is built at prepare from the passages (in memory: no resumable chunks as the embeddings) and saved in the
`bm25/` folder of prepare's `retrieval/` folder, which export ships; predict and serve load it from there.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from adaptctl.retrieval.rows import Retriever

FOLDER = "bm25"             # inside a retrieval folder
STOPWORDS = "en"
CANDIDATES = 100            # passages each ranking contributes to the fusion (at least the depth asked)


def build(texts: list[str]):
    """A bm25s index of the passages (numbered as the dense index numbers them)."""
    import bm25s

    index = bm25s.BM25()
    index.index(bm25s.tokenize(texts, stopwords=STOPWORDS, show_progress=False), show_progress=False)
    return index


def load(folder: Path):
    import bm25s

    return bm25s.BM25.load(str(Path(folder) / FOLDER), show_progress=False)


def save(index, folder: Path):
    index.save(str(Path(folder) / FOLDER), show_progress=False)


def lexical_ranking(index, queries: list[str], depth: int) -> list[list[int]]:
    """Each query's passages with a BM25 score above 0, best first, at most `depth`: a passage that shares no
    word with the query has no rank here, rather than an arbitrary one."""
    import bm25s

    count = int(index.scores["num_docs"])
    tokens = bm25s.tokenize(queries, stopwords=STOPWORDS, return_ids=False, show_progress=False)
    found, scores = index.retrieve(tokens, k=min(depth, count), show_progress=False)
    return [[int(n) for n, score in zip(row, row_scores) if score > 0] for row, row_scores in zip(found, scores)]


def fuse(rankings: list[list[int]], rrf_k: int) -> list[int]:
    """One query's rankings fused by reciprocal rank, best first (ties: the earlier passage)."""
    score: dict[int, float] = {}
    for ranking in rankings:
        for rank, number in enumerate(ranking, start=1):
            score[number] = score.get(number, 0.0) + 1 / (rrf_k + rank)
    return sorted(score, key=lambda number: (-score[number], number))


@dataclass
class HybridRetriever(Retriever):
    """A Retriever whose ranking is the dense one fused with BM25's (what prepare shows and evaluate scores,
    and predict and serve retrieve)."""
    lexical: Any = None      # the bm25s index
    rrf_k: int = 60

    def rank(self, queries: list[str], depth: int) -> list[list[int]]:
        candidates = max(depth, CANDIDATES)
        dense = super().rank(queries, candidates)
        lexical = lexical_ranking(self.lexical, queries, candidates) if queries else []
        return [fuse([d, w], self.rrf_k)[:depth] for d, w in zip(dense, lexical)]


def hybrid(retriever: Retriever, lexical_index, rrf_k: int) -> HybridRetriever:
    # every field of the dense retriever by name, so a field added to Retriever is carried without an edit here
    dense = {field.name: getattr(retriever, field.name) for field in fields(Retriever)}
    return HybridRetriever(**dense, lexical=lexical_index, rrf_k=rrf_k)


def code_key() -> str:
    """This module and the bm25s version: what prepare's key reads for the hybrid's ranking."""
    from importlib.metadata import version

    from adaptctl.core.rundir import file_hash, json_hash

    return json_hash([file_hash(Path(__file__)), f"bm25s {version('bm25s')}"])
