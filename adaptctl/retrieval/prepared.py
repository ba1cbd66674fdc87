"""prepare's side of data.retrieval: the corpus, embedder and index opened once (the index built, or taken
from the cache), and the `retrieval/` folder written beside the prepared data: the index files and
`retrieval.json`, the settings and embedder that predict and export need to retrieve as prepare did (and, with
data.retrieval.hybrid, the BM25 index in `bm25/`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from adaptctl.retrieval.rows import Retriever

if TYPE_CHECKING:
    from adaptctl.retrieval.embedder import Embedder

SETTINGS_FILE = "retrieval.json"


def content_keys(settings, base_dir: Path, where) -> dict:
    """What prepare's key reads beyond the recipe: the corpus files' content and the embedder's."""
    from adaptctl.retrieval.corpus import corpus_hash
    from adaptctl.retrieval.embedder import resolve_embedder

    keys = {"data.retrieval.corpus": corpus_hash(settings.corpus, base_dir, where),
            "data.retrieval.embedder": resolve_embedder(settings.embedder, base_dir, where).digest}
    if settings.hybrid is not None:  # its ranking's code, only where it ranks: other recipes key as before
        from adaptctl.retrieval.lexical import code_key

        keys["data.retrieval.hybrid"] = code_key()
    return keys


@dataclass(frozen=True)
class Opened:
    retriever: Retriever
    folder: Path            # the index folder (in the cache)
    embedder: Embedder      # embedder.Embedder


def open_retriever(settings, base_dir: Path, where) -> Opened:
    from adaptctl.retrieval.corpus import read_corpus
    from adaptctl.retrieval.embedder import load, resolve_embedder
    from adaptctl.retrieval.index import Index, build

    passages = read_corpus(settings.corpus, base_dir, where)
    embedder = resolve_embedder(settings.embedder, base_dir, where)
    folder = build(passages, embedder, settings.index, settings.batch_size)
    retriever = Retriever(Index.load(folder), load(embedder.path), settings.k, settings.passage, settings.batch_size)
    if settings.hybrid is not None:
        from adaptctl.retrieval import lexical

        retriever = lexical.hybrid(retriever, lexical.build(passages.texts), settings.hybrid.rrf_k)
    return Opened(retriever, folder, embedder)


def write_folder(target: Path, opened: Opened, settings):
    """prepare/retrieval: the index's files and the settings to retrieve with, the embedder by path and content."""
    from adaptctl.retrieval.index import FILES

    index_folder, embedder = opened.folder, opened.embedder
    target.mkdir(parents=True)
    for name in (*FILES, "index.faiss"):
        if (index_folder / name).is_file():
            shutil.copyfile(index_folder / name, target / name)
    document = {"k": settings.k, "query": settings.query, "passage": settings.passage, "batch_size": settings.batch_size,
                "embedder": {"name": embedder.name, "path": str(embedder.path), "digest": embedder.digest},
                "index": json.loads((index_folder / "index.json").read_text())}
    if settings.hybrid is not None:  # the BM25 index beside the dense one, and how the rankings are fused
        from adaptctl.retrieval.lexical import HybridRetriever, save

        assert isinstance(opened.retriever, HybridRetriever)  # open_retriever fuses where hybrid is set
        save(opened.retriever.lexical, target)
        document["hybrid"] = settings.hybrid.model_dump(mode="json")
    (target / SETTINGS_FILE).write_text(json.dumps(document, indent=2))
