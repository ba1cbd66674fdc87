"""`full`: train every weight."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adaptctl.methods.spec import MethodSpec
from adaptctl.section import Section


class FullMethod(Section):
    name: Literal["full"] = Field(description="Train every weight.")


SPEC = MethodSpec(name="full", config=FullMethod, apply=lambda model, recipe: model, default_learning_rate=5e-5)
