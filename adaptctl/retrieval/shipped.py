"""The retrieval an answer is made with, wherever it is made: export ships prepare's `retrieval/` folder (the
passages, their embeddings, the index, the settings) with a copy of the embedder inside the model folder,
and `adaptctl predict` (and serve, on predict's code path) retrieve from it as prepare did.  On a run
directory without export, predict reads `prepare/retrieval/` and the embedder where prepare found it,
refusing one whose content changed since.

    retriever = open_retriever(model_dir, folder)      # once (None: the model reads no passages)
    rows = retriever.attach(rows, "input.jsonl")       # per request: each row gets passages and passage_ids
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from adaptctl.core.errors import UserError
from adaptctl.data.input_rows import LINE
from adaptctl.retrieval import FOLDER, PASSAGE_IDS, PASSAGES
from adaptctl.retrieval.embedder import NOT_USED
from adaptctl.retrieval.prepared import SETTINGS_FILE

if TYPE_CHECKING:
    from adaptctl.retrieval.rows import Retriever

EMBEDDER_FOLDER = "embedder"


@dataclass
class ShippedRetriever:
    retriever: Retriever     # rows.Retriever
    query: str               # data.retrieval.query: the row's fields -> the text searched for
    folder: Path

    def attach(self, rows: list[dict], name: str) -> list[dict]:
        """Rows that give neither a prompt nor passages of their own get the k passages retrieved for their query
        (`passages`, which the prompt template reads) and their ids (`passage_ids`, kept in the output)."""
        from adaptctl.data.columns import TemplateRowError, render

        todo = [i for i, row in enumerate(rows) if "prompt" not in row and PASSAGES not in row]
        queries = []
        for i in todo:
            try:
                queries.append(render(self.query, rows[i]).strip())
            except TemplateRowError as err:
                line = rows[i].get(LINE, i + 1)
                raise UserError(f"{name}:{line}: data.retrieval.query {self.query!r}: {err.message}",
                                hint="give each row the fields the retrieval query reads, or a 'prompt' of its own") from None
        ranked = self.retriever.rank(queries, self.retriever.k)
        rows = list(rows)
        ids = self.retriever.index.ids
        for i, found in zip(todo, ranked):
            rows[i] = {**rows[i], PASSAGE_IDS: [ids[n] for n in found], PASSAGES: self.retriever.written(found)}
        return rows


def retrieval_folder(model_dir: Path, folder: Path) -> Path | None:
    """An export's own retrieval/ folder, else the prepare/retrieval/ of the run MODEL_DIR is or holds."""
    candidates = [Path(folder) / FOLDER, Path(model_dir) / "prepare" / FOLDER, Path(folder).parent.parent / "prepare" / FOLDER]
    return next((c for c in candidates if (c / SETTINGS_FILE).is_file()), None)


def open_retriever(model_dir: Path, folder: Path) -> ShippedRetriever | None:
    from adaptctl.retrieval.embedder import folder_digest, load
    from adaptctl.retrieval.index import Index
    from adaptctl.retrieval.rows import Retriever

    found = retrieval_folder(model_dir, folder)
    if found is None:
        return None
    settings = json.loads((found / SETTINGS_FILE).read_text())
    embedder = settings["embedder"]
    path = found / EMBEDDER_FOLDER if (found / EMBEDDER_FOLDER).is_dir() else Path(embedder["path"])
    if not path.is_dir() or folder_digest(path) != embedder["digest"]:
        raise UserError(f"the embedder {embedder['name']} that prepare used ({path}) is "
                        f"{'changed' if path.is_dir() else 'gone'}: these passages were embedded by another model",
                        hint="run `adaptctl prepare` on the run again (or export it: an export carries its embedder)")
    from adaptctl.models.loading import check_loadable

    check_loadable(path, name=embedder["name"])  # predict trusts no folder's code or pickles
    retriever = Retriever(Index.load(found), load(path), settings["k"], settings["passage"], settings["batch_size"])
    if hybrid := settings.get("hybrid"):  # BM25 fused as prepare fused it (retrieval/lexical.py)
        from adaptctl.retrieval import lexical

        retriever = lexical.hybrid(retriever, lexical.load(found), hybrid["rrf_k"])
    return ShippedRetriever(retriever, settings["query"], found)


def ship(prepare_folder: Path, model_folder: Path) -> dict:
    """Copy prepare/retrieval into an export being built, with the embedder inside; the export manifest's
    `retrieval` entry ({} without data.retrieval)."""
    source = Path(prepare_folder) / FOLDER
    if not (source / SETTINGS_FILE).is_file():
        return {}
    target = Path(model_folder) / FOLDER
    shutil.copytree(source, target)
    settings = json.loads((source / SETTINGS_FILE).read_text())
    embedder = Path(settings["embedder"]["path"])
    # the files that decide its embeddings, as embedder.folder_digest counts them
    shutil.copytree(embedder, target / EMBEDDER_FOLDER, ignore=lambda _, names: [n for n in names if n.endswith(NOT_USED)])
    settings["embedder"]["path"] = EMBEDDER_FOLDER  # inside the folder: an answer is the same wherever it is made
    (target / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
    return {"passages": settings["index"]["count"], "index": settings["index"]["kind"], "embedder": settings["embedder"]["name"],
            **({"hybrid": settings["hybrid"]} if settings.get("hybrid") else {})}


def verify(model_folder: Path, split, examples: int = 8) -> dict:
    """The shipped retrieval, opened as predict opens it, finds for the first held-out questions the very
    passages prepare showed them (export fails otherwise)."""
    from adaptctl.core.errors import RunFailed
    from adaptctl.retrieval import QUERY, SHOWN

    retriever = open_retriever(model_folder, model_folder)
    assert retriever is not None  # verified only where export shipped the retrieval
    rows = split.select(range(min(examples, len(split))))
    ranked = retriever.retriever.rank(list(rows[QUERY]), retriever.retriever.k)
    got = [[retriever.retriever.index.ids[n] for n in found] for found in ranked]
    if got != list(rows[SHOWN]):
        raise RunFailed("export verification: the shipped retrieval finds other passages than prepare did "
                        f"({got[:2]} against {list(rows[SHOWN])[:2]})", hint="nothing was written to export/model")
    return {"verified_questions": len(got)}
