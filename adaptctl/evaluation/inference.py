"""Batched inference: sorted by length to cut padding, under inference_mode,
in bf16 where the hardware has it."""

from __future__ import annotations

import contextlib
import time

import torch

from adaptctl import console
from adaptctl.training.hardware import resolve_precision


def autocast(precision: str = "auto"):
    resolved = resolve_precision(precision)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if resolved in ("bf16", "fp16"):
        return torch.autocast(device, dtype=torch.bfloat16 if resolved == "bf16" else torch.float16)
    return contextlib.nullcontext()


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def run_batches(rows, collate, forward, batch_size: int, precision: str = "auto", desc: str = "evaluate"):
    """Apply `forward(batch) -> list` to length-sorted batches; results come back in the original order."""
    lengths = [len(r["input_ids"]) for r in rows]
    results = [None] * len(rows)
    start = time.monotonic()
    with torch.inference_mode(), autocast(precision), console.Progress(desc, len(rows)) as progress:
        for indices in length_sorted_batches(lengths, batch_size):
            batch = {k: v.to(device()) for k, v in collate([rows[i] for i in indices]).items()}
            for i, value in zip(indices, forward(batch)):
                results[i] = value
            progress.advance(len(indices))
    seconds = time.monotonic() - start
    return results, (len(rows) / seconds if seconds > 0 else None)
