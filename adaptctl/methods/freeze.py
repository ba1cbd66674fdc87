"""`freeze`: train only the last N transformer layers and the task head."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from adaptctl.core.errors import UserError
from adaptctl.methods.spec import MethodSpec
from adaptctl.core.section import Section

class FreezeMethod(Section):
    name: Literal["freeze"] = Field(description="Train only the last transformer layers and the task head.")
    train_last_layers: int = Field(1, ge=0, description="How many final transformer layers to train.")


# Above the last transformer layer and below the task head, trained with it: BERT's pooler and DistilBERT's
# pre_classifier (what a classifier reads).  The heads themselves are the task's (TaskSpec.head_names).
ABOVE_LAYERS = ("pooler", "pre_classifier")


def freeze_all_but_last(model, n_layers: int, heads: tuple[str, ...] = ()):
    layer_ids = _layer_indices(model)
    if not layer_ids and n_layers:
        raise UserError(f"method freeze: cannot find transformer layers in {type(model).__name__}",
                        hint="use method full or lora for this architecture")
    keep = set(sorted(layer_ids)[-n_layers:]) if n_layers else set()
    for name, param in model.named_parameters():
        param.requires_grad = _is_head(name, heads) or _layer_of(name) in keep
    return model


def _layer_of(name: str) -> int | None:
    match = re.search(r"\.(?:layer|layers|h|block)\.(\d+)\.", name)
    return int(match.group(1)) if match else None


def _layer_indices(model) -> set[int]:
    return {i for name, _ in model.named_parameters() if (i := _layer_of(name)) is not None}


def _is_head(name: str, heads: tuple[str, ...]) -> bool:
    return any(part in heads or part in ABOVE_LAYERS for part in name.split("."))


def apply_freeze(model, recipe):
    from adaptctl.tasks import get_task

    return freeze_all_but_last(model, recipe.method.train_last_layers, get_task(recipe.task).head_names)


SPEC = MethodSpec(name="freeze", config=FreezeMethod, default_learning_rate=1e-4, apply=apply_freeze)
