"""LoRA and its variants through peft: `lora`, `dora` (weight-decomposed) and `qlora` (on a 4-bit base,
CUDA only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adaptctl.methods.peft_methods import apply_peft
from adaptctl.methods.spec import MethodSpec
from adaptctl.section import Section


class LoraMethod(Section):
    name: Literal["lora", "dora", "qlora"] = Field(description="Low-rank adapters (dora: weight-decomposed; qlora: on a 4-bit base, CUDA only).")
    r: int = Field(8, gt=0, description="Adapter rank.")
    alpha: float = Field(16, gt=0, description="Scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rslora).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="Module names to adapt; all-linear: every Linear layer but the output and task heads (the task "
                          "head is trained in full); omitted: peft's per-architecture defaults (q_proj, v_proj on Llama).")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling.")


# Task heads that peft trains in full (modules_to_save) but that its all-linear shorthand does not leave
# out by itself: it skips the output embeddings (lm_head) and, for SEQ_CLS only, `classifier`/`score`.
# A QA head wrapped as LoRA *and* saved in full would be trained twice over; leave it to modules_to_save.
ALL_LINEAR_EXCLUDES = {"QUESTION_ANS": ["qa_outputs"]}


def lora_config(method: LoraMethod, task_type: str, tokenizer: str):
    """target_modules left unset stays None, and `all-linear` stays that string: peft resolves both to
    module names only when it wraps the model (its per-architecture table, or every Linear layer)."""
    import peft

    excludes = ALL_LINEAR_EXCLUDES.get(task_type) if method.target_modules == "all-linear" else None
    return peft.LoraConfig(task_type=task_type, r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout,
                           target_modules=method.target_modules, exclude_modules=excludes,
                           use_rslora=method.use_rslora, use_dora=method.name == "dora")


# Adapters train few, freshly initialised weights and want a larger step than full fine-tuning.
LORA = MethodSpec(name="lora", config=LoraMethod, apply=apply_peft, default_learning_rate=2e-4, peft_config=lora_config)
DORA = MethodSpec(name="dora", config=LoraMethod, apply=apply_peft, default_learning_rate=2e-4, peft_config=lora_config)
QLORA = MethodSpec(name="qlora", config=LoraMethod, apply=apply_peft, default_learning_rate=2e-4, peft_config=lora_config)
