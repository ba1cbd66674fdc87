"""What an adaptation method is, in one place: the MethodSpec every module under adaptctl/methods/
declares.  The recipe's `method` union, the peft method names, the default learning rates and what
export can merge are read from the specs (methods/__init__.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config: type                             # the recipe's `method:` section for it (a Section with `name`)
    apply: Callable[[Any, Any], Any]         # (freshly loaded base model, recipe) -> the model to train
    default_learning_rate: float | None      # None: the method trains nothing
    peft_config: Callable | None = None      # (method section, task spec, tokenizer path) -> peft config
    mergeable: bool = True                   # a peft adapter that merges into the base weights at export
    virtual_tokens: bool = False             # adds tokens to the input (prefix/prompt tuning)
    finish_save: Callable[[Any, Any], None] | None = None   # (trained model, saved folder): rewrite what needs it
    load_options: Callable[[Any], dict] = lambda recipe: {}  # from_pretrained kwargs for the base (qlora: 4-bit)
    trains_every_weight: bool = False        # fresh weights anywhere in the model are trained (model.decoder's cross-attention)
    # task -> the default learning rate where it is not default_learning_rate (measured: bench/RESULTS-defaults.md)
    learning_rate_by_task: dict = field(default_factory=dict)
    # (method section) -> None for the Trainer's own AdamW, or (model, TrainingArguments) -> the torch optimizer
    # to train with (LoRA+: peft.optimizers' parameter groups); learning rate, weight decay and Adam's betas are
    # the arguments', and the Trainer's schedule, checkpoints and resume apply to it as to its own
    optimizer: Callable[[Any], Callable[[Any, Any], Any] | None] = lambda method: None

    @property
    def trains(self) -> bool:
        return self.default_learning_rate is not None

    @property
    def is_peft(self) -> bool:
        return self.peft_config is not None
