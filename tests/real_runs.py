"""A real-data run from a recipe dict, and what it wrote, for the slow tests that train a packaged model."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RealRun:
    run_dir: Path
    stats: dict        # prepare's stats.json splits
    metrics: dict      # evaluate's metrics of the adapted model
    baseline: dict     # evaluate's metrics of the base model
    steps: int
    seconds: float


def run_recipe(run_cli, recipe: dict, folder: Path, stages: str = "prepare,train,evaluate") -> RealRun:
    import yaml

    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run_dir, start = folder / "run", time.monotonic()
    code, _, err = run_cli(["run", path, "--run-dir", run_dir, "--stages", stages])
    assert code == 0, err
    document = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    return RealRun(run_dir=run_dir, stats=json.loads((run_dir / "prepare" / "stats.json").read_text())["splits"],
                   metrics=document["metrics"], baseline=document["baseline"]["metrics"],
                   steps=json.loads((run_dir / "train" / "manifest.json").read_text())["steps"],
                   seconds=time.monotonic() - start)
