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
