"""train: fine-tune the base model on the prepared data with the recipe's method.

Built on the Transformers Trainer (see training/session.py), so checkpoints,
gradient accumulation, schedulers, mixed precision and torchrun/accelerate
work as users know them.  Writes RUN_DIR/train/{model/, checkpoints/,
metrics.jsonl, loss.png}.
"""

from __future__ import annotations

import json
from pathlib import Path

from adaptctl import console
from adaptctl.pipeline import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    if ctx.recipe.method.name == "prompting":
        console.info("train: method prompting trains nothing; `adaptctl evaluate` scores the prompt")
        return StageResult(manifest={"trainable_parameters": 0, "note": "prompting: nothing to train"})
    from adaptctl.training.session import TrainingSession

    return TrainingSession.from_prepared(ctx, ctx.run.stage("train")).train_and_save()


def load_prepared(ctx: StageContext, needed_by: str):
    """The prepared splits, label map and base model path from RUN_DIR/prepare."""
    from datasets import load_from_disk

    manifest = ctx.run.require("prepare", needed_by)
    folder = ctx.run.stage("prepare")
    data = load_from_disk(str(folder / "data"))
    label2id = json.loads((folder / "labels.json").read_text())["label2id"]
    return data, label2id, Path(manifest["model_path"])
