"""`precision: auto` on a GPU, decided by measurement rather than by capability.

A GPU that has bf16 does not always train faster in it: bf16 autocast adds cast kernels to every layer, and
a small model is kernel-launch bound (at 135 M parameters on an H200, bench/RESULTS-gpu.md, fp32 was the
faster).  So before training, the first batch of the run's own data goes through a few forward and backward
passes in each precision the GPU offers, and the faster one trains.  The measurement leaves the model as it
found it (weights, gradients, random state) and is kept in the stage folder, so a resumed run trains in the
precision it started in.  On a CPU the capability check stays: bf16 autocast was faster on every workload
measured there (bench/RESULTS-precision.md), so a measurement would only add its own seconds.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

WARMUP_STEPS = 1   # the first pass in a precision pays for kernel selection and caches
TIMED_STEPS = 3
RECORD = "precision.json"


@dataclass
class PrecisionChoice:
    precision: str
    how: str                                   # "measured", "as when the run started", "capability", "recipe"
    seconds_per_step: dict[str, float] = field(default_factory=dict)

    def document(self) -> dict:
        return {"precision": self.precision, "how": self.how, "seconds_per_step": self.seconds_per_step}


def options(capable: str) -> tuple[str, ...]:
    """The precisions a measurement compares on this machine (one: nothing to measure)."""
    import torch

    if capable == "bf16" and torch.cuda.is_available():
        return ("bf16", "fp32")
    return (capable,)


def median_step_seconds(model, batch: dict, precision: str, device: str) -> float:
    """Median seconds of a forward and backward pass on `batch` in `precision` (autocast, as the Trainer trains)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    times = []
    for _ in range(WARMUP_STEPS + TIMED_STEPS):
        synchronize(device)
        clock = time.perf_counter()
        with torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(**batch).loss
        loss.backward()
        synchronize(device)
        times.append(time.perf_counter() - clock)
        model.zero_grad(set_to_none=True)
    timed = sorted(times[WARMUP_STEPS:])
    return timed[len(timed) // 2]


def synchronize(device: str):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def measure(model, batch: dict, candidates: tuple[str, ...], device: str) -> PrecisionChoice:
    """The fastest of `candidates` on this model and batch; weights, gradients and random state untouched."""
    import torch

    was_training = model.training
    model.train()  # dropout on, as in training
    devices = [torch.cuda.current_device()] if device == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):  # dropout's draws here must not shift the run's
            timings = {p: round(median_step_seconds(model, batch, p, device), 5) for p in candidates}
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return PrecisionChoice(min(timings, key=timings.__getitem__), "measured", timings)


def recorded(folder: Path) -> PrecisionChoice | None:
    try:
        document = json.loads((folder / RECORD).read_text())
        return PrecisionChoice(document["precision"], "as when the run started", document.get("seconds_per_step", {}))
    except (OSError, ValueError, KeyError):
        return None


def keep(folder: Path, choice: PrecisionChoice):
    from adaptctl.core.rundir import atomic_write_json

    atomic_write_json(folder / RECORD, choice.document())


def decide(requested: str, model, first_batch, folder: Path, resuming: bool) -> PrecisionChoice:
    """The precision a training run uses.  `first_batch()` gives the run's first batch as model inputs, or
    None where the step is not the model's own loss (a TRL trainer's) or the model cannot be timed whole on
    one device (sharded, quantized): those keep the capability check."""
    from adaptctl.core import distributed
    from adaptctl.training.hardware import resolve_precision

    capable = resolve_precision(requested)
    if requested != "auto":
        return PrecisionChoice(capable, "recipe")
    candidates = options(capable)
    if len(candidates) == 1:
        return PrecisionChoice(capable, "capability")
    kept = recorded(folder) if resuming else None
    choice = kept or measured(model, first_batch, candidates, capable)
    # every process trains in rank 0's choice (on several machines only rank 0 may see the record)
    choice = distributed.from_main(choice)
    if distributed.is_main() and kept is None and choice.seconds_per_step:
        keep(folder, choice)
    return choice


def measured(model, first_batch, candidates: tuple[str, ...], capable: str) -> PrecisionChoice:
    import torch

    batch = first_batch()
    if batch is None:
        return PrecisionChoice(capable, "capability")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model.to(device)  # where the Trainer would put it
        return measure(model, {k: v.to(device) for k, v in batch.items()}, candidates, device)
    except torch.OutOfMemoryError:  # the batch trains under the Trainer's own memory settings, or says so there
        torch.cuda.empty_cache()
        model.zero_grad(set_to_none=True)
        return PrecisionChoice(capable, "capability")
