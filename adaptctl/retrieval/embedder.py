"""The sentence embedder of data.retrieval: resolved offline as model.base is (a hub id, a folder, or a run
directory of task embedding), checked as every model folder is, and run by sentence-transformers, which
reads the folder's own pooling (modules.json; a plain folder gets mean pooling).  Embeddings are
L2-normalised, so an inner product is a cosine similarity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adaptctl.core.errors import UserError

FIELD = ("data", "retrieval", "embedder")
DEFAULT = "sentence-transformers/all-MiniLM-L6-v2"
# Files of a model folder that do not decide its embeddings: a README, plots, logs, and weights that are never
# loaded (pickles are refused, ONNX is another runtime).  The digest leaves them out and export does not ship them.
NOT_USED = (".md", ".png", ".jsonl", ".log", ".bin", ".pt", ".pth", ".pkl", ".ckpt", ".onnx")


@dataclass(frozen=True)
class Embedder:
    name: str       # what the recipe wrote
    path: Path      # the model folder
    digest: str     # the content of its files: an index is built by exactly this model


def resolve_embedder(name: str, base_dir: Path | None = None, where=lambda field: ".".join(field)) -> Embedder:
    from adaptctl.models.loading import check_loadable, check_tokenizer_files
    from adaptctl.models.resolve import resolve_model

    try:
        path = resolve_model(name, base_dir=base_dir).path
    except UserError as exc:
        hint = exc.hint.replace("model.base", ".".join(FIELD)) if exc.hint else exc.hint
        raise UserError(f"{where(FIELD)}: {exc.message.removeprefix('model.base: ')}", hint=hint,
                        details=exc.details) from None
    check_loadable(path, name=name)  # no pickle weights, no model code of its own: nothing runs as it loads
    check_tokenizer_files(path, field=".".join(FIELD))
    return Embedder(name, Path(path), folder_digest(Path(path)))


def folder_digest(folder: Path) -> str:
    import hashlib

    from adaptctl.core.rundir import file_hash

    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(NOT_USED)):
        digest.update(str(file.relative_to(folder)).encode() + file_hash(file).encode())
    return digest.hexdigest()


def load(path: Path):
    """A SentenceTransformer of the folder, on the evaluation device, never running the folder's code."""
    from sentence_transformers import SentenceTransformer

    from adaptctl.evaluation.inference import device
    from adaptctl.core.library_output import route

    route()  # its "No sentence-transformers model found" and load reports come out as adaptctl lines
    return SentenceTransformer(str(path), device=str(device()), local_files_only=True, trust_remote_code=False)


def wrap(model, folder: Path):
    """A SentenceTransformer over an already loaded transformer (task embedding's model, with its method
    applied), with the pooling that `folder` (the model's base) declares."""
    sentence = load(folder)
    sentence[0].model = model
    return sentence


def dimension(model) -> int:
    """The embedding size (sentence-transformers 6 renamed get_sentence_embedding_dimension)."""
    found = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return found()


def encode(model, texts: list[str], batch_size: int):
    """Normalised float32 embeddings of `texts` (n, dimension); sentence-transformers sorts them by length."""
    import numpy as np

    if not texts:
        return np.zeros((0, dimension(model)), dtype=np.float32)
    vectors = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=False)
    return np.ascontiguousarray(vectors, dtype=np.float32)
