"""A sweep's results, read from the study alone (so any worker on any machine writes the same):
RUN_DIR/sweep/results.csv, sweep/report.md with its plots, and sweep/best.yaml, the best trial's resolved
recipe."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from adaptctl.core import console
from adaptctl.core.redact import redact
from adaptctl.core.rundir import atomic_write_text
from adaptctl.sweep.space import Space
from adaptctl.sweep.study import INTERRUPTED, directory_number, requeued, shown
from adaptctl.sweep.trial import ERROR, FIGURES, SAME_AS

FIGURE_COLUMNS = (*FIGURES, "examples_per_second")


def rows(study, space: Space) -> list[dict]:
    """One row per trial that started, in trial order; a requeued (interrupted) trial's row says where it went on."""
    found, trials = [], study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.state.name == "WAITING":
            continue
        row = {"trial": trial.number, "state": _state(trial), "run_dir": trial.user_attrs.get("run_dir", "")}
        row.update({p.path: trial.params.get(p.path, "") for p in space.parameters})
        row[space.sweep.metric] = trial.value if trial.state.name == "COMPLETE" else ""
        row.update({name: trial.user_attrs.get(name, "") for name in FIGURE_COLUMNS})
        row["note"] = _note(trial, trials)
        found.append(row)
    return found


def _state(trial) -> str:
    if trial.user_attrs.get(INTERRUPTED):
        return "interrupted"
    return trial.state.name.lower()


def _note(trial, trials) -> str:
    if trial.user_attrs.get(SAME_AS) is not None:
        return f"same recipe as trial {trial.user_attrs[SAME_AS]}"
    if requeued(trial, trials):
        return "continued by a later trial in the same directory"
    if directory_number(trial) != trial.number:
        return f"resumes interrupted trial {directory_number(trial)} in its directory"
    return str(trial.user_attrs.get(ERROR, ""))


def best(study):
    """The best complete trial, or None."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def write_all(study, space: Space, root: Path) -> dict:
    """results.csv, report.md with its plots, best.yaml: {name: path relative to the run directory}."""
    from adaptctl.sweep.plots import sweep_plots

    out, table = root / "sweep", rows(study, space)
    atomic_write_text(out / "results.csv", _csv(table))
    outputs = {"results": "sweep/results.csv", "report": "sweep/report.md"}
    winner = best(study)
    if winner is not None:
        atomic_write_text(out / "best.yaml", _best_yaml(winner, space))
        outputs["best"] = "sweep/best.yaml"
    plots = sweep_plots(table, [p.path for p in space.parameters], space.sweep.metric,
                        space.sweep.chosen_direction(), out)
    tie = tie_sentence(study, winner, space.sweep.metric, root) if winner is not None else ""
    atomic_write_text(out / "report.md", _report(table, space, winner, plots, root, tie))
    return outputs


def _csv(table: list[dict]) -> str:
    buffer = io.StringIO()
    if table:
        writer = csv.DictWriter(buffer, fieldnames=list(table[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    return buffer.getvalue()


def _best_yaml(winner, space: Space) -> str:
    """The best trial's resolved recipe, built again from its parameters (a worker on another machine may
    have run it) through the same loader as the trial: it validates as the trial's did."""
    from adaptctl.run.context import resolved_recipe_text

    params = {p.path: p.value_of(winner.params[p.path]) for p in space.parameters if p.path in winner.params}
    number = winner.user_attrs.get("run_dir", f"trials/{winner.number}").rsplit("/", 1)[-1]
    loaded = space.recipe(params, name=f"{space.loaded.recipe.name}-trial-{number}")
    header = (f"# The best trial of sweep {space.loaded.recipe.name}: {shown(winner)} "
              f"({winner.user_attrs.get('run_dir', '')}), {space.sweep.metric} = {winner.value:.6g}\n")
    return header + resolved_recipe_text(loaded.recipe)


def _report(table: list[dict], space: Space, winner, plots: dict, root: Path, tie: str = "") -> str:
    sweep, name = space.sweep, space.loaded.recipe.name
    counts: dict[str, int] = {}
    for row in table:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    lines = [f"# Sweep: {name}", "",
             f"{len(table)} trials ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}); sampler {space.sampler}, "
             f"pruner {sweep.pruner}; {sweep.chosen_direction()} `{sweep.metric}`.", ""]
    if winner is not None:
        lines += [f"Best: {shown(winner)} ({winner.user_attrs.get('run_dir', '')}), {sweep.metric} = {winner.value:.4f}, "
                  + ", ".join(f"`{k}` = {v}" for k, v in winner.params.items()) + ". Its recipe: `best.yaml`.", ""]
        if tie:
            lines += [tie, ""]
    lines += _markdown_table(table) + [""]
    lines += [f"![{title}]({file})" for title, file in plots.items()]
    done = sorted({r["run_dir"] for r in table if r["state"] == "complete" and r["run_dir"]}, key=_trial_order)
    lines += ["", "Trials side by side: `adaptctl runs compare " + " ".join(str(root / d) for d in done) + "`."]
    return "\n".join(lines) + "\n"


def tied_with_best(study, winner, metric: str, root: Path) -> tuple[list, list | None]:
    """The other complete trials whose metric lies within the best trial's bootstrap 95% interval (its
    evaluate/metrics.json `intervals`), or equals it where it has none (eval_loss); and that interval."""
    import json

    from optuna.trial import TrialState

    interval = None
    document = root / str(winner.user_attrs.get("run_dir", "")) / "evaluate" / "metrics.json"
    if document.is_file():
        interval = (json.loads(document.read_text()).get("intervals") or {}).get(metric)
    others = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.number != winner.number and t.user_attrs.get(SAME_AS) != winner.number
              and t.user_attrs.get("run_dir") != winner.user_attrs.get("run_dir")]
    if interval and all(isinstance(b, (int, float)) for b in interval):
        return [t for t in others if interval[0] <= t.value <= interval[1]], interval
    return [t for t in others if t.value == winner.value], None


def tie_sentence(study, winner, metric: str, root: Path) -> str:
    """One sentence when the best trial is tied within noise with others ('' when it stands apart)."""
    tied, interval = tied_with_best(study, winner, metric, root)
    if not tied:
        return ""
    names = ", ".join(f"{shown(t)} ({t.value:.4g})" for t in tied)
    noise = (f"within the best trial's bootstrap 95% interval, {interval[0]:.4g} to {interval[1]:.4g}" if interval
             else "the same value")
    return (f"The best is tied within noise: {names} scored {noise}. On this evidence the trials are not told apart; "
            "prefer the cheaper or simpler recipe, or measure on more examples.")


def _trial_order(run_dir: str) -> int:
    tail = run_dir.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _markdown_table(table: list[dict]) -> list[str]:
    if not table:
        return ["No trial has run yet."]
    columns = list(table[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table:
        lines.append("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
    return lines


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return redact(str(value)).replace("|", "\\|").replace("\n", " ")[:120]  # the table is printed as well as written


def print_table(table: list[dict]):
    """The results on stderr, beside the log (unless --quiet)."""
    from rich.console import Console
    from rich.table import Table

    if not table or console.is_quiet():
        return
    shown = [c for c in table[0] if c not in ("run_dir", "note")]
    grid = Table(*shown)
    for row in table:
        grid.add_row(*(_cell(row[c]) for c in shown))
    Console(stderr=True, width=200, markup=False, highlight=False).print(grid)
