"""Pick the checkpoint to resume from: the newest one that is whole.

A checkpoint can be half-written if the process died while saving (SIGKILL,
a full disk); resuming from it would crash or silently lose state, so each
candidate is checked and the previous one is used when it fails.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from adaptctl.core import console

WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json")


def checkpoints(folder: Path) -> list[Path]:
    found = [p for p in Path(folder).glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=step_of)


def step_of(checkpoint: Path | None) -> int:
    """The optimizer step a checkpoint-N folder was saved at; 0 for none (training from the start)."""
    return int(checkpoint.name.split("-")[1]) if checkpoint else 0


def is_whole(checkpoint: Path) -> bool:
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    has_weights = any((checkpoint / name).is_file() and (checkpoint / name).stat().st_size > 0 for name in WEIGHT_FILES)
    has_optimizer = (checkpoint / "optimizer.pt").is_file() and (checkpoint / "optimizer.pt").stat().st_size > 0
    return has_weights and has_optimizer and "global_step" in state


def last_whole(folder: Path) -> Path | None:
    for checkpoint in reversed(checkpoints(folder)):
        if is_whole(checkpoint):
            return checkpoint
        console.warn(f"checkpoint {checkpoint} is incomplete (interrupted while saving); trying the previous one")
    return None


def discard_unfinished(folder: Path, resume: Path | None) -> None:
    """Remove the checkpoints newer than `resume`: each was cut off while saving (last_whole skipped it).
    The Trainer would save into the same folder again and leave the dead save's debris in it, such as
    the `.tmpXXXXXX` file safetensors writes before its rename."""
    for checkpoint in checkpoints(folder):
        if step_of(checkpoint) > step_of(resume):
            console.info(f"removing {checkpoint}, cut off while saving; training saves it again")
            shutil.rmtree(checkpoint)
