"""The passages embedded into an index folder, and searched.

An index folder holds `passages.jsonl` (id, text), `embeddings.npy` (float32, one normalised row per
passage), `index.faiss` for HNSW, and `index.json` (what built it).  It is built once per corpus, embedder
and settings under ADAPTCTL_CACHE/retrieval/<key>: the embeddings are written chunk by chunk into a
memory-mapped file beside `progress.json` (the rows done), so a corpus larger than memory never sits in
memory as vectors, and a killed build resumes at the last whole chunk.  The folder takes its name only
when complete.

Search: `exact` is the inner product with every passage, a block of passages at a time (numpy); `hnsw` is
FAISS's HNSW graph over the same vectors (approximate).  `auto` takes exact up to EXACT_LIMIT passages:
measured (bench/RESULTS-kbqa.md), one exact search of 100,000 MiniLM vectors costs about as much as
embedding the query itself, and exact search grows with the corpus while the query's embedding does not;
HNSW answers in milliseconds at any of these sizes, at the price of sometimes missing the best passage.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptctl.core import console
from adaptctl.retrieval.corpus import Passages

EXACT_LIMIT = 100_000
CHUNK_BATCHES = 16          # embedding batches per written chunk (the unit a killed build resumes from)
EXACT_BLOCK = 65_536        # passages scored at once by exact search, for
QUERY_BLOCK = 256           # queries at once: bounds its memory (64 MB of scores) on large corpora
HNSW_NEIGHBOURS = 32        # FAISS's M: graph edges per vector
HNSW_BUILD_DEPTH = 200      # efConstruction and
HNSW_SEARCH_DEPTH = 256     # efSearch: the deeper pair finds exact search's best passage more often, still in
                            # milliseconds per query (bench/RESULTS-kbqa.md, HNSW settings)
FILES = ("passages.jsonl", "embeddings.npy", "index.json")


def chosen_kind(asked: str, count: int) -> str:
    return asked if asked != "auto" else ("exact" if count <= EXACT_LIMIT else "hnsw")


def index_key(passages: Passages, embedder, kind: str) -> str:
    from adaptctl.core.rundir import json_hash

    graph = {"hnsw": [HNSW_NEIGHBOURS, HNSW_BUILD_DEPTH]} if kind == "hnsw" else {}
    return json_hash({"passages": passages.digest(), "embedder": embedder.digest, "kind": kind, "format": 1, **graph})


def build(passages: Passages, embedder, asked_kind: str, batch_size: int) -> Path:
    """The index folder for these passages and embedder, from the cache or built (resuming a killed build)."""
    from filelock import FileLock

    from adaptctl.core.rundir import cache_dir

    kind = chosen_kind(asked_kind, len(passages))
    target = cache_dir() / "retrieval" / index_key(passages, embedder, kind)
    if (target / "index.json").is_file():
        console.info(f"prepare: retrieval index cache hit ({target})")
        return target
    work = target.with_name(target.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    with FileLock(str(work) + ".lock"):  # another process building the same index: wait for it
        if (target / "index.json").is_file():
            return target
        _build_into(work, passages, embedder, kind, batch_size)
        os.replace(work, target)
    Path(str(work) + ".lock").unlink(missing_ok=True)
    return target


def _build_into(work: Path, passages: Passages, embedder, kind: str, batch_size: int):
    import numpy as np
    from numpy.lib.format import open_memmap

    from adaptctl.retrieval.embedder import dimension, encode, load
    from adaptctl.core.rundir import atomic_write_json

    _write_passages(work / "passages.jsonl", passages)
    model = load(embedder.path)
    size = dimension(model)
    progress = _progress(work, len(passages), size)
    done = progress["done"]
    mode = "r+" if done else "w+"
    matrix = open_memmap(work / "embeddings.npy", mode=mode, dtype=np.float32, shape=(len(passages), size))
    if done:
        console.info(f"prepare: resuming the embedding of {len(passages)} passages at passage {done + 1}")
    clock, chunk = time.monotonic(), batch_size * CHUNK_BATCHES
    with console.Progress("embed passages", len(passages)) as bar:
        bar.advance(done)
        for start in range(done, len(passages), chunk):
            end = min(start + chunk, len(passages))
            matrix[start:end] = encode(model, passages.texts[start:end], batch_size)
            matrix.flush()  # the rows on disk before the progress says so: a kill loses at most this chunk
            atomic_write_json(work / "progress.json", {**progress, "done": end})
            bar.advance(end - start)
    seconds = time.monotonic() - clock
    graph_seconds = _write_hnsw(work, matrix) if kind == "hnsw" else 0.0
    del matrix
    info = {"kind": kind, "count": len(passages), "dimension": size, "passages": passages.digest(),
            "embedder": {"name": embedder.name, "digest": embedder.digest}, "batch_size": batch_size,
            "embed_seconds": round(seconds, 2), "passages_per_second": round((len(passages) - done) / seconds, 1)
            if seconds else None, "graph_seconds": round(graph_seconds, 2)}
    atomic_write_json(work / "index.json", info)
    (work / "progress.json").unlink(missing_ok=True)
    console.info(f"prepare: embedded {len(passages) - done} passages in {seconds:.1f} s"
                 + (f"; HNSW graph in {graph_seconds:.1f} s" if kind == "hnsw" else ""))


def _progress(work: Path, count: int, dimension: int) -> dict:
    """The rows embedded by a killed build of the same index (0: none, or another shape)."""
    fresh = {"count": count, "dimension": dimension, "done": 0}
    try:
        found = json.loads((work / "progress.json").read_text())
    except (OSError, ValueError):
        return fresh
    same = found.get("count") == count and found.get("dimension") == dimension and (work / "embeddings.npy").is_file()
    return {**fresh, "done": int(found.get("done", 0))} if same else fresh


def _write_passages(path: Path, passages: Passages):
    from adaptctl.core.rundir import atomic_write_text

    atomic_write_text(path, "".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
                                    for i, t in zip(passages.ids, passages.texts)))


def _write_hnsw(folder: Path, matrix) -> float:
    import faiss

    clock = time.monotonic()
    graph = faiss.IndexHNSWFlat(matrix.shape[1], HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = HNSW_BUILD_DEPTH
    for start in range(0, matrix.shape[0], EXACT_BLOCK):  # added a block at a time from the memory map
        graph.add(matrix[start:start + EXACT_BLOCK])
    faiss.write_index(graph, str(folder / "index.faiss"))
    return time.monotonic() - clock


# ------------------------------------------------------------------ search
@dataclass
class Index:
    folder: Path
    ids: list[str]
    texts: list[str]
    kind: str
    vectors: Any              # the embeddings, memory-mapped
    graph: Any = None         # FAISS HNSW (kind hnsw)

    @classmethod
    def load(cls, folder: Path) -> Index:
        import numpy as np

        folder = Path(folder)
        info = json.loads((folder / "index.json").read_text())
        ids, texts = [], []
        with open(folder / "passages.jsonl", encoding="utf-8") as handle:
            for line in handle:
                passage = json.loads(line)
                ids.append(passage["id"])
                texts.append(passage["text"])
        graph = None
        if info["kind"] == "hnsw":
            import faiss

            graph = faiss.read_index(str(folder / "index.faiss"))
        vectors = np.load(folder / "embeddings.npy", mmap_mode="r")
        return cls(folder, ids, texts, info["kind"], vectors, graph)

    def search(self, queries, depth: int) -> list[list[int]]:
        """The passage numbers of the `depth` best passages for each query vector, best first."""
        depth = min(depth, len(self.ids))
        if self.graph is not None:
            self.graph.hnsw.efSearch = max(HNSW_SEARCH_DEPTH, 2 * depth)
            _, found = self.graph.search(queries, depth)
            return [[int(i) for i in row if i >= 0] for row in found]
        return exact_search(self.vectors, queries, depth)


def exact_search(vectors, queries, depth: int) -> list[list[int]]:
    """Top `depth` by inner product, best first (ties: the earlier passage), for QUERY_BLOCK queries and
    EXACT_BLOCK passages at a time, so that the score matrix stays near 64 MB whatever the corpus."""
    found = []
    for first in range(0, len(queries), QUERY_BLOCK):
        found += _exact_block(vectors, queries[first:first + QUERY_BLOCK], depth)
    return found


def _exact_block(vectors, queries, depth: int) -> list[list[int]]:
    import numpy as np

    best_scores: Any = np.zeros((len(queries), 0), dtype=np.float32)
    best: Any = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, vectors.shape[0], EXACT_BLOCK):
        block = np.asarray(vectors[start:start + EXACT_BLOCK])
        scores = np.concatenate([best_scores, queries @ block.T], axis=1)
        numbers = np.concatenate([best, np.broadcast_to(np.arange(start, start + len(block)),
                                                        (len(queries), len(block)))], axis=1)
        cut = min(depth, scores.shape[1])
        kept = np.argpartition(-scores, cut - 1, axis=1)[:, :cut]  # the best `cut`, in no order
        kept_scores, kept_numbers = np.take_along_axis(scores, kept, 1), np.take_along_axis(numbers, kept, 1)
        order = np.lexsort((kept_numbers, -kept_scores), axis=1)   # by score, then by passage number
        best_scores, best = np.take_along_axis(kept_scores, order, 1), np.take_along_axis(kept_numbers, order, 1)
    return best.tolist()
