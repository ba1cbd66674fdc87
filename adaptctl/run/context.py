"""What a stage is given (StageContext) and what it returns (StageResult).

A stage module (adaptctl/stages/<name>.py) exposes `run(ctx) -> StageResult` and optionally
`inputs(ctx) -> dict`: content hashes of what it reads that the recipe alone does not pin down, such as data
files.  Which function that is for each stage is the stage table's (adaptctl/pipeline.py), handed to the
context by whoever makes it (`pipeline.context`), so that this module needs no stage and the stages need no
pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from adaptctl.core.rundir import RunDir, atomic_write_text
from adaptctl.recipe.loader import LoadedRecipe
from adaptctl.recipe.schema import Recipe


@dataclass
class StageContext:
    loaded: LoadedRecipe
    run: RunDir
    stage_inputs: Mapping[str, Callable[[StageContext], dict]]   # stage name -> its inputs(ctx), where it has one
    nproc: int = 1
    key: str | None = None          # this stage's input hash, set while it runs
    previous: dict | None = None    # the stage's manifest before this run (resume decisions)
    overrides: list[str] = field(default_factory=list)   # the --set options, for the commands a hint names
    run_dir_given: bool = False     # --run-dir was given: hints repeat it
    callbacks: tuple = ()           # extra Trainer callbacks for the training stages (a sweep's pruning)
    _inputs: dict = field(default_factory=dict, repr=False)

    def inputs_of(self, name: str) -> dict:
        """Content hashes of what stage `name` reads beyond the recipe, computed once per process
        (hashing the data files is the slow part of a key)."""
        if name not in self._inputs:
            inputs = self.stage_inputs.get(name)
            self._inputs[name] = inputs(self) if inputs is not None else {}
        return self._inputs[name]

    def where(self, field: tuple) -> str:
        """`FILE:LINE:COL: section.field` of a recipe field, for what a stage finds wrong with it in the data."""
        from adaptctl.recipe.loader import field_location

        return f"{field_location(self.loaded, field)}: {'.'.join(str(p) for p in field)}"

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe

    @property
    def recipe_dir(self) -> Path:
        return self.loaded.path.parent


@dataclass
class StageResult:
    outputs: dict = field(default_factory=dict)      # name -> path relative to the run directory
    metrics: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)     # extra manifest fields
    skipped: bool = False


def resolved_recipe_text(recipe: Recipe) -> str:
    """RUN_DIR/recipe.yaml's text: the recipe with extends and overrides applied, every default spelled out."""
    return yaml.safe_dump(recipe.model_dump(mode="json", exclude_none=True), sort_keys=False)


def save_resolved_recipe(ctx: StageContext):
    atomic_write_text(ctx.run.root / "recipe.yaml", resolved_recipe_text(ctx.recipe))
