"""prepare's output contract, read back: the tokenized splits, the label map and the base model folder
the data was tokenized for (RUN_DIR/prepare/{data/, labels.json, manifest.json})."""

from __future__ import annotations

import json
from pathlib import Path


def load_prepared(run, needed_by: str):
    """(splits, label2id, model path) from a RunDir's complete prepare stage (else a UserError naming
    the command to run first, from RunDir.require)."""
    from datasets import load_from_disk

    manifest = run.require("prepare", needed_by)
    folder = run.stage("prepare")
    data = load_from_disk(str(folder / "data"))
    label2id = json.loads((folder / "labels.json").read_text())["label2id"]
    return data, label2id, Path(manifest["model_path"])
