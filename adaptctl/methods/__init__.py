"""The method registry: one MethodSpec per adaptation method (methods/spec.py), peft style.

Each spec's `apply` turns a freshly loaded base model into the model to train.  peft methods keep the
task head trainable and saved with the adapter (`modules_to_save`), a known peft trap for classifiers.
Adding a method is a module with its settings class and SPEC, and a line in METHOD_SPECS; a second spec
under a name already taken is refused at import (as peft refuses a second registration of a method).
"""

from __future__ import annotations

from adaptctl.methods import freeze, full, ia3, lora, prompting, virtual_tokens
from adaptctl.methods.spec import MethodSpec


def register(*specs: MethodSpec) -> dict[str, MethodSpec]:
    """The registry, by name; a name given twice is an error, not the last spec kept in silence."""
    registry: dict[str, MethodSpec] = {}
    for spec in specs:
        if spec.name in registry:
            raise ValueError(f"method {spec.name!r} is registered twice ({registry[spec.name].apply.__module__} "
                             f"and {spec.apply.__module__}): give the new method a name of its own")
        registry[spec.name] = spec
    return registry


METHOD_SPECS: dict[str, MethodSpec] = register(
    full.SPEC, freeze.SPEC, lora.LORA, lora.DORA, lora.QLORA, ia3.SPEC,
    virtual_tokens.PREFIX, virtual_tokens.PROMPT, prompting.SPEC,
)
METHOD_NAMES = tuple(METHOD_SPECS)
PEFT_METHODS = tuple(name for name, spec in METHOD_SPECS.items() if spec.is_peft)
# One settings class can serve several methods (lora, dora and qlora share LoraMethod).
METHOD_CLASSES = {name: spec.config for name, spec in METHOD_SPECS.items()}
CONFIG_CLASSES = tuple(dict.fromkeys(METHOD_CLASSES.values()))


def get_method(name: str) -> MethodSpec:
    return METHOD_SPECS[name]


def apply(model, recipe):
    return get_method(recipe.method.name).apply(model, recipe)


def learning_rate(recipe) -> float:
    if recipe.train.learning_rate is not None:
        return recipe.train.learning_rate
    spec = get_method(recipe.method.name)
    rate = spec.learning_rate_by_task.get(recipe.task, spec.default_learning_rate)
    assert rate is not None  # asked by the train stage, which returns early for a method that trains nothing
    return rate


def learning_rate_source(recipe) -> str:
    """Where learning_rate(recipe) came from, for the log and the warnings."""
    if recipe.train.learning_rate is not None:
        return "train.learning_rate"
    spec = get_method(recipe.method.name)
    return f"{spec.name}'s default for {recipe.task}" if recipe.task in spec.learning_rate_by_task else f"{spec.name}'s default"


def default_learning_rates_text() -> str:
    """The defaults for the recipe's help text, from the specs (one place to change them)."""
    def rate(value: float | None) -> str:
        return f"{value:.0e}".replace("e-0", "e-")

    return ", ".join(f"{rate(spec.default_learning_rate)} {name}"
                     + "".join(f" ({rate(value)} for {task})" for task, value in spec.learning_rate_by_task.items())
                     for name, spec in METHOD_SPECS.items() if spec.trains)


def adapted_modules(model) -> dict:
    """The modules a peft method wrapped and those it trains in full (see peft_methods.adapted_modules)."""
    if not hasattr(model, "peft_config"):
        return {}
    from adaptctl.methods.peft_methods import adapted_modules as peft_adapted

    return peft_adapted(model)

