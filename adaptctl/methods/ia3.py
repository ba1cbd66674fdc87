"""(IA)^3 through peft: learned rescaling vectors."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adaptctl.methods.peft_methods import peft_method
from adaptctl.methods.spec import MethodSpec
from adaptctl.core.section import Section


class IA3Method(Section):
    name: Literal["ia3"] = Field(description="(IA)^3: learned rescaling vectors.")
    target_modules: list[str] | None = Field(None, description="Module names to rescale; per-architecture defaults when omitted.")
    feedforward_modules: list[str] | None = Field(None, description="Which of target_modules are feed-forward layers.")


def ia3_config(method: IA3Method, task, tokenizer: str):
    import peft

    return peft.IA3Config(task_type=task.peft_task_type, target_modules=method.target_modules,
                          feedforward_modules=method.feedforward_modules)


SPEC = MethodSpec(name="ia3", config=IA3Method, apply=peft_method(ia3_config), default_learning_rate=3e-3, peft_config=ia3_config)
