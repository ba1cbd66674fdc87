"""`prompting`: no training; evaluate scores the base model with a zero- or few-shot prompt
(tasks/prompting.py), so a recipe shows what fine-tuning gains over prompting alone."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adaptctl.core.errors import UserError
from adaptctl.methods.spec import MethodSpec
from adaptctl.core.section import Section


class PromptingMethod(Section):
    name: Literal["prompting"] = Field(description="No training: evaluate the base model with a zero/few-shot template.")


def _nothing_to_apply(model, recipe):
    # The stages ask MethodSpec.trains first; reaching this is a caller's bug, said plainly.
    raise UserError("method prompting trains nothing", hint="use `adaptctl evaluate` to score the prompting baseline")


SPEC = MethodSpec(name="prompting", config=PromptingMethod, apply=_nothing_to_apply, default_learning_rate=None)
