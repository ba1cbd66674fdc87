"""The Optuna study behind a sweep: its storage, sampler and pruner, the trial budget shared by every
worker, and the requeue of trials that a killed or interrupted worker left unfinished.

The study is the one record of the sweep: every worker, on this machine or another, reads the
trials' parameters, states, values and figures (user attributes) from it.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path

from adaptctl import console
from adaptctl.errors import UserError
from adaptctl.recipe_loader import LoadedRecipe, Where
from adaptctl.rundir import process_alive
from adaptctl.sweep.space import Space

# A trial's user attributes: where it ran, and which trial directory it continues.
HOST, PID, RESUMES, INTERRUPTED = "host", "pid", "resumes", "interrupted"
QUESTION = "question"  # the study's user attribute: the hash of the recipe and space it answers
DEFAULT_TRIALS = 10  # random and tpe, when sweep.n_trials is unset
SQLITE_TIMEOUT_S = 60  # workers wait this long for SQLite's write lock instead of failing at once


def storage_url(sweep, root: Path) -> str:
    return sweep.storage or f"sqlite:///{(root / 'sweep' / 'study.db').resolve()}"


def with_driver(url: str) -> str:
    """A plain postgresql:// URL with the driver that is installed: SQLAlchemy takes psycopg2 for it, while
    psycopg (3) is what is commonly installed today; a URL naming its driver (postgresql+...) is kept."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and sep and importlib.util.find_spec("psycopg2") is None \
            and importlib.util.find_spec("psycopg") is not None:
        return f"postgresql+psycopg://{rest}"
    return url


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: the message says so anyway
        return url


def open_storage(loaded: LoadedRecipe, root: Path):
    """Optuna's RDB storage, connected (and its tables made) now: a storage that cannot be reached is the
    user's to fix, said before any trial runs."""
    import optuna

    url = storage_url(loaded.recipe.sweep, root)
    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        if loaded.recipe.sweep.storage is None:
            (root / "sweep").mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(with_driver(url), engine_kwargs=kwargs)
    except Exception as exc:  # a bad URL, a missing driver, a refused connection, an unwritable folder
        where = loaded.positions.get(("sweep", "storage")) or Where(str(loaded.path))
        raise UserError(f"{where}: sweep.storage: cannot open the study storage {shown_url(url)}: {_reason(exc)}",
                        hint="check the URL, that the database server is up and reachable from here, and that its "
                             "driver is installed (postgresql: pip install 'psycopg[binary]')") from None


def _reason(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def open_study(loaded: LoadedRecipe, storage, space: Space, worker: int = 0):
    import optuna

    sweep = loaded.recipe.sweep
    study = optuna.create_study(storage=storage, study_name=sweep.study_name or loaded.recipe.name,
                                direction=sweep.chosen_direction(), load_if_exists=True,
                                pruner=_pruner(sweep))
    _check_same_direction(study, sweep, loaded)
    _check_same_question(study, loaded)
    seed = sweep.seed if sweep.seed is not None else loaded.recipe.seed
    if space.sampler != "grid":
        # Each worker, and each re-run, draws its own numbers: one seed everywhere would propose the same points.
        # Not for a grid: its seed shuffles the grid, and every process must number the points alike.
        seed += 1000 * worker + len(study.trials)
    study.sampler = _sampler(space, seed)
    return study


def _sampler(space: Space, seed: int):
    from optuna.samplers import GridSampler, RandomSampler, TPESampler

    if space.sampler == "grid":
        return GridSampler(space.grid(), seed=seed)
    return RandomSampler(seed=seed) if space.sampler == "random" else TPESampler(seed=seed)


def _pruner(sweep):
    from optuna.pruners import MedianPruner, NopPruner

    if sweep.pruner == "none":
        return NopPruner()
    return MedianPruner(n_startup_trials=sweep.pruner_startup_trials, n_warmup_steps=sweep.pruner_warmup_steps)


def _check_same_direction(study, sweep, loaded: LoadedRecipe):
    if study.direction.name.lower() != sweep.chosen_direction():
        where = loaded.positions.get(("sweep", "direction")) or loaded.positions.get(("sweep", "metric"))
        raise UserError(f"{where}: sweep: the study {study.study_name} in this storage was made to "
                        f"{study.direction.name.lower()}, and this sweep would {sweep.chosen_direction()}",
                        hint="keep the metric and direction of the earlier sweep, or set sweep.study_name to start another study")


def question(recipe) -> str:
    """What a study answers: the recipe its trials vary and the search space, not the budget, storage or
    name, which a re-run may change (n_trials: 8 -> 12 adds trials to the same study)."""
    from adaptctl.rundir import json_hash

    asked = recipe.model_dump(mode="json", exclude={"sweep", "name", "description"})
    asked["sweep"] = recipe.sweep.model_dump(mode="json", include={"parameters", "metric", "sampler"})
    return json_hash(asked)


def _check_same_question(study, loaded: LoadedRecipe):
    """A study's finished trials are never repeated, so one run for another recipe or search space would mix
    results that do not compare: refused.  A study made before this check gets the current question."""
    asked, stored = question(loaded.recipe), study.user_attrs.get(QUESTION)
    if stored is None:
        study.set_user_attr(QUESTION, asked)
    elif stored != asked:
        where = loaded.positions.get(("sweep", "parameters")) or Where(str(loaded.path))
        raise UserError(f"{where}: sweep: the study {study.study_name} in this storage was run for another recipe "
                        "or search space; its finished trials would not compare with new ones",
                        hint="set sweep.study_name (or --run-dir) to start another study, or undo the change")


def trial_budget(sweep, space: Space) -> int:
    grid = space.grid_size() if space.sampler == "grid" else None
    wanted = sweep.n_trials or grid or DEFAULT_TRIALS
    if grid is not None and wanted > grid:
        console.info(f"sweep: n_trials {wanted} is more than the grid's {grid} points; running {grid}")
    return min(wanted, grid) if grid is not None else wanted


def counted(study) -> int:
    """The trials that count against the budget: finished or running, not the interrupted ones (their
    retries count instead)."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state != TrialState.WAITING and not t.user_attrs.get(INTERRUPTED))


def budget_left(study, budget: int) -> bool:
    """Whether another trial should start: a requeued trial always does, others while the budget lasts."""
    from optuna.trial import TrialState

    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return bool(waiting) or counted(study) < budget


@contextmanager
def ask_lock(root: Path):
    """One worker of this machine at a time decides whether to start a trial and starts it, so that two
    never both take the last one.  (Workers on other machines share only the database: there a sweep may
    run a trial or two past n_trials.)"""
    from filelock import FileLock

    lock = FileLock(root / "sweep" / ".ask.lock")
    lock.acquire()
    try:
        yield lock
    finally:
        if lock.is_locked:  # the trial's objective releases it as soon as the trial exists
            lock.release(force=True)


def requeue_interrupted(study, storage):
    """Trials this machine's workers left unfinished (Ctrl-C, SIGTERM, a kill): failed, marked interrupted,
    and queued again with the same parameters, to finish in the same trial directory."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        ours = trial.user_attrs.get(HOST) == socket.gethostname()
        dead = trial.state == TrialState.RUNNING and ours and not _alive(trial.user_attrs.get(PID))
        stopped = trial.state == TrialState.FAIL and ours and trial.user_attrs.get(INTERRUPTED)
        if not (dead or stopped) or requeued(trial, trials):
            continue
        if dead:  # a finished trial's attributes are frozen: mark it before failing it
            storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if trial.params:  # killed before its values were drawn: nothing to finish, its place is free
            number = directory_number(trial)
            study.enqueue_trial(trial.params, user_attrs={RESUMES: number})
            console.info(f"sweep: trial {trial.number} was interrupted; it runs again in trials/{number}")


def directory_number(trial) -> int:
    """The n of the trial's directory trials/<n>: its own number, or the interrupted trial's it continues."""
    return trial.user_attrs.get(RESUMES, trial.number)


def requeued(trial, trials) -> bool:
    """Whether a later trial continues this one's directory (it was queued again already)."""
    return any(other.number > trial.number and other.user_attrs.get(RESUMES) == directory_number(trial) for other in trials)


def claim(trial, run_dir: str):
    """Which process runs the trial, for requeue_interrupted; and in which directory."""
    trial.set_user_attr(HOST, socket.gethostname())
    trial.set_user_attr(PID, os.getpid())
    trial.set_user_attr("run_dir", run_dir)


def _alive(pid) -> bool:
    return isinstance(pid, int) and process_alive(pid)
