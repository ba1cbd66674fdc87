"""Batched inference: sorted by length to cut padding, under inference_mode,
in bf16 where the hardware has it."""

from __future__ import annotations

import contextlib
import time

import torch

from adaptctl.core import console
from adaptctl.training.hardware import resolve_precision


def autocast(precision: str = "auto"):
    resolved = resolve_precision(precision)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if resolved in ("bf16", "fp16"):
        return torch.autocast(device, dtype=torch.bfloat16 if resolved == "bf16" else torch.float16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def weights_cast_once(model):
    """torch.no_grad for inference, where bf16/fp16 autocast casts each fp32 weight once for the whole block
    instead of at every use (every batch; for generation, every generated token).

    Autocast keeps its low-precision copy of a weight only for a leaf that requires grad, and never under
    inference_mode: so the frozen base of an adapter model, or any model under inference_mode, had its
    weights read and cast again at each forward (a 4096x4096 Linear on one row: 32 ms with the cast, 6 ms
    without, this CPU).  The flag builds no graph under no_grad; it only lets the cache keep the copies,
    and the casts are the same, so outputs are too.  The price: the bf16 copies (half the fp32 weights' size)
    are held until the block ends, as they are for trainable weights.  The flags are restored on exit."""
    weights = model.parameters() if hasattr(model, "parameters") else []  # an ONNX session has none of its own
    frozen = [p for p in weights if not p.requires_grad and p.is_floating_point()]
    for param in frozen:
        param.requires_grad_(True)
    try:
        with torch.no_grad():
            yield model
    finally:
        for param in frozen:
            param.requires_grad_(False)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def run_batches(rows, collate, forward, batch_size: int, precision: str = "auto", desc: str = "evaluate", model=None,
                progress_in_batch: bool = False):
    """Apply `forward(batch) -> list` to length-sorted batches; results come back in the original order.
    `model`, the one forward runs: its weights are cast to bf16 once for all batches (weights_cast_once).
    progress_in_batch: forward(batch, progress) may report within a batch (generation, token by token), so a
    long batch is not minutes of silence."""
    lengths = [len(r["input_ids"]) for r in rows]
    results = [None] * len(rows)
    start = time.monotonic()
    no_grad = weights_cast_once(model) if model is not None else torch.inference_mode()
    with no_grad, autocast(precision), console.Progress(desc, len(rows)) as progress:
        for indices in length_sorted_batches(lengths, batch_size):
            batch = {k: v.to(device()) for k, v in collate([rows[i] for i in indices]).items()}
            for i, value in zip(indices, forward(batch, progress) if progress_in_batch else forward(batch)):
                results[i] = value
            progress.advance(len(indices))
    seconds = time.monotonic() - start
    return results, (len(rows) / seconds if seconds > 0 else None)
