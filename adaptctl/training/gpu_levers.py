"""Training levers that exist only on CUDA GPUs: padding-free batches, Liger kernels, torch.compile and TF32.

Each is chosen in the recipe's train section (TF32 by the hardware) and applied only where CUDA is;
on a CPU the recipe still runs, unchanged, and the log says that the lever did nothing here, so one
recipe serves a laptop and a GPU server.

- `train.padding_free` (causal-lm): DataCollatorWithFlattening joins a batch's rows into one row with
  position_ids restarting at each, and the model loads with FlashAttention-2, whose varlen kernels keep
  the rows apart: no padding token is computed.  It needs the flash-attn package.
- `train.liger`: the Trainer's use_liger_kernel (fused RMSNorm, RoPE, SwiGLU and linear cross-entropy
  from the liger-kernel package).
- `train.compile`: the Trainer's torch_compile (the model compiled by torch.compile, default backend).
  Left to CUDA: on a CPU the compilation costs more than two cores win back in a run of this size.
- TF32 matmuls on Ampere and later (compute capability 8+), where fp32 work remains under bf16 autocast.
"""

from __future__ import annotations

import importlib.util

from adaptctl.core import console
from adaptctl.core.errors import UserError

AMPERE = 8   # the first CUDA compute capability with TF32 tensor cores


def on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def load_options(train) -> dict:
    """from_pretrained kwargs: FlashAttention-2 for padding-free batches."""
    if not (train.padding_free and on_cuda()):
        return {}
    _require("flash_attn", "train.padding_free", "flash-attn")
    return {"attn_implementation": "flash_attention_2"}


def collator(train, padded):
    """The task's collator, or the flattening one for padding-free batches on CUDA."""
    if not (train.padding_free and on_cuda()):
        return padded
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)


def training_arguments(train) -> dict:
    """TrainingArguments fields: TF32 on Ampere+, Liger kernels and torch.compile when asked (CUDA only)."""
    if not on_cuda():
        _say_cpu_noops(train)
        return {}
    import torch

    found = {"tf32": torch.cuda.get_device_capability()[0] >= AMPERE}
    if train.liger:
        _require("liger_kernel", "train.liger", "liger-kernel")
        found["use_liger_kernel"] = True
    if train.compile:
        found["torch_compile"] = True
    return found


def _say_cpu_noops(train):
    asked = [name for name, on in (("padding_free", train.padding_free), ("liger", train.liger),
                                   ("compile", train.compile)) if on]
    if asked:
        console.info(f"train: {' and '.join('train.' + a for a in asked)} act{'s' if len(asked) == 1 else ''} on CUDA GPUs only; "
                     "on this CPU training runs without them")


def _require(module: str, field: str, package: str):
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{field} needs the {package} package, which is not installed",
                        hint=f"pip install {package} on this GPU machine, or set {field}: false")
