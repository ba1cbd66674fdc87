"""One trial: its recipe, a full run directory RUN_DIR/trials/<n>/ run through the stages in this process,
the validation loss reported to the study as it trains, and the figures the results table shows.

Export is left out of a trial: it reloads the model in a fresh process to verify it, which every trial
would pay for one model that ships. `adaptctl export sweep/best.yaml --run-dir RUN_DIR/trials/<n>`
exports the chosen one without training it again (the stage keys match).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from adaptctl import pipeline
from adaptctl.core import console
from adaptctl.run import freshness
from adaptctl.run.context import save_resolved_recipe
from adaptctl.core.errors import AdaptctlError, Interrupted, RunFailed
from adaptctl.core.redact import redact
from adaptctl.core.rundir import RunDir, disk_failure, json_hash
from adaptctl.sweep import study as studies
from adaptctl.sweep.space import Space, describe

# What each trial reports, from its stage manifests: (stage field, manifest key).
FIGURES = {"train_seconds": "train_seconds", "trainable_parameters": "trainable_parameters",
           "peak_memory_mb": "peak_memory_mb"}
RECIPE_KEY, SAME_AS, ERROR = "recipe_key", "same_as", "error"


class TrialFailed(Exception):
    """A trial that failed: recorded as failed with its error, and the sweep goes on."""


def objective(space: Space, root: Path, lock):
    """Optuna's objective for this sweep; it releases the ask lock once Optuna has made the trial."""
    def run_trial(trial):
        lock.release(force=True)
        try:
            return _run(trial, space, root)
        except (KeyboardInterrupt, Interrupted):
            trial.set_user_attr(studies.INTERRUPTED, True)  # the next run of the sweep finishes it
            raise
        except Exception as exc:
            import optuna

            if isinstance(exc, optuna.TrialPruned):
                console.info(f"sweep: {studies.shown(trial)} pruned: {exc}")
                raise
            if (full := disk_failure(exc)) is not None:  # every later trial would fail alike: stop, resumable
                with contextlib.suppress(Exception):  # the study's own storage may be on the full disk too
                    trial.set_user_attr(studies.INTERRUPTED, True)
                raise full from None
            message = redact(exc.message if isinstance(exc, AdaptctlError) else f"{type(exc).__name__}: {exc}")
            trial.set_user_attr(ERROR, message)  # the study's storage is a file of its own: redacted here
            console.warn(f"sweep: {studies.shown(trial)} failed: {message}; the sweep goes on")
            raise TrialFailed(message) from exc

    return run_trial


def _run(trial, space: Space, root: Path) -> float:
    values = space.suggest(trial)
    number = studies.directory_number(trial)
    studies.claim(trial, f"trials/{number}")
    loaded = space.recipe(values, name=f"{space.loaded.recipe.name}-trial-{number}")
    key = recipe_key(loaded.recipe)
    trial.set_user_attr(RECIPE_KEY, key)
    same = _finished_twin(trial, key)
    if same is not None:
        return _reuse(trial, same)
    console.info(f"sweep: {studies.shown(trial)} ({describe(values)}) in trials/{number}")
    run = RunDir(root / "trials" / str(number))
    ctx = pipeline.context(loaded, run, callbacks=_pruning(trial, space))
    _run_stages(ctx)
    figures = trial_figures(run)
    for name, value in figures.items():
        trial.set_user_attr(name, value)
    value = metric_value(run, space.sweep.metric)
    console.info(f"sweep: {studies.shown(trial)} {space.sweep.metric}={value:.4g}")
    return value


def _run_stages(ctx):
    from adaptctl.training.session import reset_peak_memory

    stages = [s for s in freshness.plan(ctx.recipe) if s != "export"]
    with ctx.run.lock():
        reset_peak_memory()  # the trials share a process: each reports its own peak
        clock = time.monotonic()
        for stage in stages:
            pipeline.execute(stage, ctx, skip_done=True)
        save_resolved_recipe(ctx)
    console.info(f"sweep: {ctx.run.root.name}: {', '.join(stages)} in {time.monotonic() - clock:.1f}s")


def recipe_key(recipe) -> str:
    """What a trial trains and measures: its resolved recipe but for its name."""
    return json_hash({k: v for k, v in recipe.model_dump(mode="json").items() if k != "name"})


def _finished_twin(trial, key: str):
    """An earlier complete trial with the very same recipe (a method.* value that the trial's method has
    no field for, or a sampler proposing a point again): its result stands for this one."""
    from optuna.trial import TrialState

    for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if other.user_attrs.get(RECIPE_KEY) == key and other.number != trial.number:
            return other
    return None


def _reuse(trial, same) -> float:
    console.info(f"sweep: {studies.shown(trial)} is the same recipe as {studies.shown(same)}; its result is reused")
    trial.set_user_attr(SAME_AS, same.number)
    trial.set_user_attr("run_dir", same.user_attrs.get("run_dir"))
    for name in (*FIGURES, "examples_per_second"):
        if name in same.user_attrs:
            trial.set_user_attr(name, same.user_attrs[name])
    return same.value


def _pruning(trial, space: Space) -> tuple:
    """The Trainer callback that reports the validation loss to the study and stops a trial the pruner
    gives up on.  Optuna's pruner compares values in the study's direction, so a maximised metric gets the
    negated loss: a lower loss is then the better value, as it should be."""
    if space.sweep.pruner == "none":
        return ()
    import optuna

    from adaptctl.training.callbacks import EvalLossHook

    sign = -1.0 if space.sweep.chosen_direction() == "maximize" else 1.0

    def report(step: int, loss: float, last: bool):
        trial.report(sign * loss, step)
        # Not at the last step: stopping then saves nothing, and the trial's metric may still be the best
        # (a higher validation loss does not always mean a lower accuracy).
        if not last and trial.should_prune():
            raise optuna.TrialPruned(f"at step {step}, validation loss {loss:.4g} is behind the median of earlier trials")

    return (EvalLossHook(report),)


def trial_figures(run: RunDir) -> dict:
    trained = run.read_manifest("distill") or run.read_manifest("train") or {}
    figures = {name: trained.get(key) for name, key in FIGURES.items() if trained.get(key) is not None}
    evaluated = run.read_manifest("evaluate") or {}
    if evaluated.get("examples_per_second") is not None:
        figures["examples_per_second"] = evaluated["examples_per_second"]
    return figures


def metric_value(run: RunDir, metric: str) -> float:
    """The trial's metric: evaluate's, or the validation loss that training reported last."""
    if metric == "eval_loss":
        manifest = run.read_manifest("distill") or run.read_manifest("train") or {}
    else:
        manifest = run.read_manifest("evaluate") or {}
    value = (manifest.get("metrics") or {}).get(metric)
    if not isinstance(value, (int, float)):
        raise RunFailed(f"{run.root} reported no {metric}", hint="see its manifests")
    return float(value)
