"""Precision and device facts."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """auto -> bf16 where the hardware has it (CUDA with bf16, or a CPU with avx512_bf16/AMX), else fp32."""
    import torch

    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        # Not fp16 on older GPUs: it needs loss scaling and can overflow; users who want it say so.
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def set_threads(requested: int | None, where: str) -> tuple[int, str]:
    """Set torch's CPU threads: `requested` (from `where`), else OMP_NUM_THREADS, else torch's
    default (one per core).  Returns (threads, where the number came from) for the log.

    On a loaded machine fewer threads than cores can be much faster (generation ran 4x faster with
    1 thread than with 2 on a busy 2-core machine): the number is the user's to choose."""
    import os

    import torch

    if requested is not None:
        torch.set_num_threads(requested)
        return requested, where
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return torch.get_num_threads(), "OMP_NUM_THREADS"
    return torch.get_num_threads(), "torch's default"
