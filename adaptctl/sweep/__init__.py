"""`adaptctl sweep RECIPE`: trials over recipe fields with Optuna (docs/commands/sweep.md).

Reads top to bottom: the search space checked (every trial's recipe validated before any runs), the study
opened in its storage (SQLite in RUN_DIR/sweep/study.db, or sweep.storage), interrupted trials queued
again, --workers N-1 more processes started on the same study, trials run until the budget is spent,
then the results written from the study.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from adaptctl.core import children, console, stop_request
from adaptctl.core.errors import RunFailed, UserError
from adaptctl.recipe.loader import LoadedRecipe
from adaptctl.core.rundir import RunDir
from adaptctl.sweep import results, study as studies
from adaptctl.sweep.space import Space
from adaptctl.sweep.trial import TrialFailed, objective


def run_sweep(loaded: LoadedRecipe, run: RunDir, *, workers: int = 1, worker: int = 0,
              worker_args: list[str] | None = None) -> dict:
    """Run this process's share of the sweep; the summary that --json prints.  `worker_args`: the command
    line options that the extra worker processes repeat (--set ...)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # adaptctl's log says what each trial did
    space = _checked_space(loaded)
    run.claim()
    with studies.storage_errors(loaded, run.root):  # a full disk under Optuna's own errors: exit 3, naming it
        return _sweep(loaded, run, space, workers, worker, worker_args)


def _sweep(loaded: LoadedRecipe, run: RunDir, space: Space, workers: int, worker: int, worker_args) -> dict:
    storage = studies.open_storage(loaded, run.root)
    studies.claim_directory(loaded, run.root)
    study = studies.open_study(loaded, storage, space, worker)
    budget = studies.trial_budget(loaded.recipe.sweep, space)
    with studies.ask_lock(run.root):
        studies.requeue_interrupted(study, storage)
    console.info(f"sweep: study {study.study_name} in {studies.shown_url(studies.storage_url(loaded.recipe.sweep, run.root))}: "
                 f"{studies.counted(study)} of {budget} trials started or done, sampler {space.sampler}")
    clock = time.monotonic()
    workers_started = [_start_worker(loaded, run, index, worker_args or []) for index in range(1, workers)]
    with children.stopped_on_exit(workers_started):  # a stop (Ctrl-C, SIGTERM) reaches every worker
        _run_trials(study, space, run.root, budget)
        _wait(workers_started)
    return _finish(study, space, run, time.monotonic() - clock, write=worker == 0)


def _checked_space(loaded: LoadedRecipe) -> Space:
    if loaded.recipe.sweep is None:
        raise UserError(f"{loaded.path}: the recipe has no sweep section",
                        hint="add `sweep: {metric: accuracy, parameters: {train.learning_rate: [1.0e-4, 5.0e-4]}}` (docs/commands/sweep.md)")
    space = Space(loaded)
    checked = space.check()
    grid = f" (a grid of {space.grid_size()})" if space.sampler == "grid" else ""
    console.info(f"sweep: {checked} trial recipes checked{grid}")
    return space


def _run_trials(study, space: Space, root: Path, budget: int):
    """Trials until the budget is spent: each decided and started under the ask lock, run without it."""
    while True:
        stop_request.raise_if_requested("the next trial")
        with studies.ask_lock(root) as lock:
            if not studies.budget_left(study, budget):
                return
            study.optimize(objective(space, root, lock), n_trials=1, catch=(TrialFailed,))


# --------------------------------------------------------------- workers
def _start_worker(loaded: LoadedRecipe, run: RunDir, index: int, args: list[str]) -> subprocess.Popen:
    """Another `adaptctl sweep` process on the same study: it takes the next trial, as this one does."""
    command = [sys.executable, "-m", "adaptctl", "sweep", str(loaded.path), "--run-dir", str(run.root),
               "--worker-index", str(index), "--quiet", *args]
    console.info(f"sweep: worker {index} started")
    return children.start(command, stdout=subprocess.DEVNULL)


def _wait(workers: list[subprocess.Popen]):
    for child in workers:
        code = child.wait()
        if code not in (0, 130):
            console.warn(f"sweep: a worker process exited with {code}; its trials are in the study")


def worker_threads(workers: int, requested: int | None) -> int | None:
    """CPU threads for each of N workers on one machine: the cores shared, unless told."""
    if requested or workers <= 1 or os.environ.get("OMP_NUM_THREADS"):
        return requested
    return max(1, (os.cpu_count() or 1) // workers)


# --------------------------------------------------------------- results
def _finish(study, space: Space, run: RunDir, seconds: float, write: bool) -> dict:
    table = results.rows(study, space)
    outputs = results.write_all(study, space, run.root) if write else {}
    if write:
        results.print_table(table)
    winner = results.best(study)
    counts: dict[str, int] = {}
    for row in table:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    if winner is None:
        raise RunFailed(f"no trial of the sweep completed ({', '.join(f'{n} {s}' for s, n in counts.items()) or 'none ran'})",
                        hint=f"see the errors in {run.root / 'sweep' / 'results.csv'}")
    metric = space.sweep.metric
    console.info(f"sweep: best {studies.shown(winner)}: {metric}={winner.value:.4g}; recipe in {run.root / 'sweep' / 'best.yaml'}")
    if tie := results.tie_sentence(study, winner, metric, run.root):
        console.warn(f"sweep: {tie}")
    tied = [studies.directory_number(t) for t in results.tied_with_best(study, winner, metric, run.root)[0]]
    return {"stage": "sweep", "status": "complete", "run_dir": str(run.root), "outputs": outputs,
            "metrics": {metric: winner.value},
            "best": {"trial": winner.number, "run_dir": winner.user_attrs.get("run_dir"), "params": winner.params,
                     "tied_with": tied},
            "trials": counts, "wall_seconds": round(seconds, 1)}
