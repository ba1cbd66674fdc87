"""The base of every recipe section (recipe.py, and each method's settings under methods/)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # Unknown keys are errors (a typo gets a "did you mean"); inf/nan are never a sensible setting
    # (a learning rate of .inf passes `gt=0`).
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)
