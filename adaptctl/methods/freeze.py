"""`freeze`: train only the last N transformer layers and the task head."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from adaptctl.errors import UserError
from adaptctl.methods.spec import MethodSpec
from adaptctl.section import Section

class FreezeMethod(Section):
    name: Literal["freeze"] = Field(description="Train only the last transformer layers and the task head.")
    train_last_layers: int = Field(1, ge=0, description="How many final transformer layers to train.")


# Heads that task models put on top of the backbone.
# "cls": a BERT masked-LM head (cls.predictions), fresh on a bare encoder: it must train
HEAD_NAMES = ("classifier", "score", "qa_outputs", "lm_head", "pre_classifier", "pooler", "cls")


def freeze_all_but_last(model, n_layers: int):
    layer_ids = _layer_indices(model)
    if not layer_ids and n_layers:
        raise UserError(f"method freeze: cannot find transformer layers in {type(model).__name__}",
                        hint="use method full or lora for this architecture")
    keep = set(sorted(layer_ids)[-n_layers:]) if n_layers else set()
    for name, param in model.named_parameters():
        param.requires_grad = _is_head(name) or _layer_of(name) in keep
    return model


def _layer_of(name: str) -> int | None:
    match = re.search(r"\.(?:layer|layers|h|block)\.(\d+)\.", name)
    return int(match.group(1)) if match else None


def _layer_indices(model) -> set[int]:
    return {i for name, _ in model.named_parameters() if (i := _layer_of(name)) is not None}


def _is_head(name: str) -> bool:
    return any(part in HEAD_NAMES for part in name.split("."))


SPEC = MethodSpec(name="freeze", config=FreezeMethod, default_learning_rate=1e-4,
                  apply=lambda model, recipe: freeze_all_but_last(model, recipe.method.train_last_layers))
