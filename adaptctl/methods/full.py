"""`full`: train every weight (optionally all but the input word embeddings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adaptctl.core import console
from adaptctl.methods.spec import MethodSpec
from adaptctl.core.section import Section


class FullMethod(Section):
    name: Literal["full"] = Field(description="Train every weight.")
    freeze_embeddings: bool = Field(False, description=(
        "Keep the input word embeddings as loaded. A speed lever for large vocabularies on a CPU: no dense "
        "gradient, optimizer state or update for the vocabulary x hidden matrix (half of MiniLM's weights); "
        "its accuracy cost is measured in docs/benchmarks.md. Where the output head shares the matrix "
        "(tied embeddings), the head stays frozen too."))


def apply_full(model, recipe):
    if recipe.method.freeze_embeddings:
        weight = model.get_input_embeddings().weight
        weight.requires_grad_(False)
        output = model.get_output_embeddings()
        tied = output is not None and output.weight is weight
        console.info(f"method full: input word embeddings frozen ({weight.numel():,} weights)"
                     + ("; the output head shares them, so it stays as loaded too" if tied else ""))
    return model


SPEC = MethodSpec(name="full", config=FullMethod, apply=apply_full, default_learning_rate=5e-5, trains_every_weight=True)
