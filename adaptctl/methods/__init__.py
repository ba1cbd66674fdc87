"""Adaptation methods, registered in one table (peft style).

Each entry turns a freshly loaded base model into the model to train:
`apply(model, recipe) -> model`.  peft methods keep the task head trainable
and saved with the adapter (`modules_to_save`), a known peft trap for
classifiers.
"""

from __future__ import annotations

from adaptctl.errors import UserError
from adaptctl.methods.freeze import freeze_all_but_last
from adaptctl.methods.peft_methods import apply_peft


def _full(model, recipe):
    return model


def _freeze(model, recipe):
    return freeze_all_but_last(model, recipe.method.train_last_layers)


def _prompting(model, recipe):
    raise UserError("method prompting trains nothing", hint="use `adaptctl evaluate` to score the prompting baseline")


METHODS = {
    "full": _full,
    "freeze": _freeze,
    "lora": apply_peft,
    "dora": apply_peft,
    "qlora": apply_peft,
    "ia3": apply_peft,
    "prefix-tuning": apply_peft,
    "prompt-tuning": apply_peft,
    "prompting": _prompting,
}

# Adapters train few, freshly initialised weights and want a larger step.
DEFAULT_LEARNING_RATES = {"full": 5e-5, "freeze": 1e-4, "prefix-tuning": 1e-2, "prompt-tuning": 3e-2, "ia3": 3e-3}


def apply(model, recipe):
    return METHODS[recipe.method.name](model, recipe)


def learning_rate(recipe) -> float:
    if recipe.train.learning_rate is not None:
        return recipe.train.learning_rate
    return DEFAULT_LEARNING_RATES.get(recipe.method.name, 2e-4)


def adapted_modules(model) -> dict:
    """The modules a peft method wrapped and those it trains in full (see peft_methods.adapted_modules)."""
    if not hasattr(model, "peft_config"):
        return {}
    from adaptctl.methods.peft_methods import adapted_modules as peft_adapted

    return peft_adapted(model)


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
