"""`adaptctl runs list|show|compare`: read run directories' manifests and metrics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from adaptctl.core.errors import UserError
from adaptctl.core.rundir import STAGES, RunDir, run_lineage

HEADLINE = ("accuracy", "f1", "rougeL", "exact_match", "perplexity", "bleu")


def _runs_under(root: Path) -> list[Path]:
    if not root.is_dir():
        raise UserError(f"no runs folder at {root}", hint="pass the folder that holds run directories")
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "recipe.yaml").exists())


def _metrics(run: Path) -> dict:
    try:
        found = json.loads((run / "evaluate" / "metrics.json").read_text())
    except (OSError, ValueError):  # missing, unreadable or not JSON
        return {}
    # a hand-edited or foreign file: keep only the shape the table can show
    if not isinstance(found, dict) or not isinstance(found.get("metrics", {}), dict):
        return {}
    return found


def _number(value, spec: str = ".4g") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _status(run: Path) -> dict:
    rd = RunDir(run)
    return {s: m.get("status") for s in STAGES if (m := rd.read_manifest(s))}


def _headline(metrics: dict) -> str:
    values = metrics.get("metrics", {})
    return "  ".join(f"{k}={_number(values[k])}" for k in HEADLINE if _number(values.get(k)))


def list_runs(root: Path, as_json: bool):
    runs = [{"run_dir": str(p), "stages": _status(p), "metrics": _metrics(p).get("metrics", {})} for p in _runs_under(root)]
    if as_json:
        sys.stdout.write(json.dumps({"runs": runs}) + "\n")
        return
    table = Table("run", "stages", "metrics")
    for run in runs:
        stages = " ".join(f"{s}:{st}" for s, st in run["stages"].items())
        table.add_row(run["run_dir"], stages, _headline({"metrics": run["metrics"]}))
    Console(width=200, markup=False).print(table)


def show_run(run: Path, as_json: bool):
    if not (run / "recipe.yaml").exists():
        raise UserError(f"{run} is not a run directory (no recipe.yaml)", hint="see `adaptctl runs list`")
    rd = RunDir(run)
    manifests = {s: m for s in STAGES if (m := rd.read_manifest(s))}
    if as_json:
        sys.stdout.write(json.dumps({"run_dir": str(run), "stages": manifests, "evaluate": _metrics(run),
                                     "lineage": run_lineage(run)}) + "\n")
        return
    chain = run_lineage(run)
    if len(chain) > 2:  # model.base named an earlier run: the phases, base first
        Console(width=200, markup=False).print("lineage: " + " -> ".join(_phase(entry) for entry in chain))
    table = Table("stage", "status", "finished", "seconds", "metrics")
    for stage, m in manifests.items():
        found = m["metrics"] if isinstance(m.get("metrics"), dict) else {}
        metrics = "  ".join(f"{k}={_number(v)}" for k, v in found.items() if _number(v))
        table.add_row(stage, str(m.get("status")), str(m.get("finished_at", "")), str(m.get("wall_seconds", "")), metrics)
    Console(width=200, markup=False).print(table)


def _phase(entry: dict) -> str:
    if "run" not in entry:
        return str(entry.get("model"))
    return f"{entry.get('name')} [{entry.get('task')}, recipe {str(entry.get('recipe_hash'))[:12]}] ({entry['run']})"


def compare_runs(runs: list[Path], as_json: bool, diff: bool = False):
    rows = {str(r): _metrics(r) for r in runs}
    missing = [r for r, m in rows.items() if not m]
    if missing:
        raise UserError(f"no evaluate/metrics.json in {', '.join(missing)}", hint="run `adaptctl evaluate` there first")
    if as_json:
        payload = {r: m.get("metrics", {}) for r, m in rows.items()}
        if diff:
            payload = {"metrics": payload, "recipe_diff": _recipe_diff(runs)}
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    tasks = sorted({str(m.get("task")) for m in rows.values()})
    if len(tasks) > 1:
        from adaptctl.core import console

        console.warn(f"runs compare: these runs are of different tasks ({', '.join(tasks)}); their metrics do not compare")
    _print_metrics(rows)
    if diff:
        _print_recipe_diff(runs)


def _print_metrics(rows: dict):
    names = sorted({k for m in rows.values() for k in m.get("metrics", {})})
    table = Table("run", "task", "split", "examples", "baseline", *names)
    for run, m in rows.items():
        baseline = m.get("baseline") if isinstance(m.get("baseline"), dict) else {}
        table.add_row(run, str(m.get("task", "")), str(m.get("split", "")), _number(m.get("num_examples"), "d"),
                      str(baseline.get("kind", "")), *(_number(m.get("metrics", {}).get(n), ".4f") for n in names))
    Console(width=200, markup=False).print(table)


def _recipe_diff(runs: list[Path]) -> dict:
    """Every recipe field whose value differs between the runs: field -> {run: value}."""
    from adaptctl.run.freshness import flatten

    flat = {str(r): flatten(_recipe(r)) for r in runs}
    fields = sorted({f for values in flat.values() for f in values})
    return {f: {r: values.get(f) for r, values in flat.items()} for f in fields
            if len({json.dumps(values.get(f), sort_keys=True, default=str) for values in flat.values()}) > 1}


def _recipe(run: Path) -> dict:
    import yaml

    try:
        found = yaml.safe_load((run / "recipe.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return found if isinstance(found, dict) else {}


def _print_recipe_diff(runs: list[Path]):
    differing = _recipe_diff(runs)
    table = Table("recipe field", *(str(r) for r in runs), title="recipes: the fields that differ")
    for field, values in differing.items():
        table.add_row(field, *(json.dumps(values[str(r)], default=str) for r in runs))
    Console(width=200, markup=False).print(table if differing else "recipes: identical")
