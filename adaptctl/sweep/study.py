"""The Optuna study behind a sweep: its storage, sampler and pruner, the trial budget shared by every
worker, and the requeue of trials that a killed or interrupted worker left unfinished.

The study is the one record of the sweep: every worker, on this machine or another, reads the
trials' parameters, states, values and figures (user attributes) from it.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from adaptctl.core import console
from adaptctl.core.errors import UserError
from adaptctl.recipe.loader import LoadedRecipe, Where
from adaptctl.core.redact import redact
from adaptctl.core.rundir import (RunDir, atomic_write_json, content_hash, disk_failure, is_run_directory, process_alive,
                             read_json_object, run_model_folder)
from adaptctl.sweep.space import Space

# A trial's user attributes: where it ran, and which trial directory it continues.
HOST, PID, RESUMES, INTERRUPTED = "host", "pid", "resumes", "interrupted"
OWNER_FILE = "study.json"  # RUN_DIR/sweep/study.json: the one study whose trials the run directory holds
INPUTS = "inputs"  # the study's user attribute: the content keys of the data and models its trials read
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
    assert loaded.recipe.sweep is not None  # sweep() refuses a recipe without a sweep section
    url = storage_url(loaded.recipe.sweep, root)
    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        if loaded.recipe.sweep.storage is None:
            (root / "sweep").mkdir(parents=True, exist_ok=True)
        return _connected(with_driver(url), kwargs)
    except Exception as exc:  # a bad URL, a missing driver, a refused connection, an unwritable folder
        if (full := disk_failure(exc, _written(url))) is not None:
            raise full from None
        where = loaded.positions.get(("sweep", "storage")) or Where(str(loaded.path))
        raise UserError(f"{where}: sweep.storage: cannot open the study storage {shown_url(url)}: {_reason(exc)}",
                        hint="check the URL, that the database server is up and reachable from here, and that its "
                             "driver is installed (postgresql: pip install 'psycopg[binary]')") from None


def _connected(url: str, engine_kwargs: dict, tries: int = 3):
    """RDBStorage, made again where another process created the schema between Optuna's check and its own
    CREATE TABLE (two machines, or a sweep and its workers, starting on a new database at once)."""
    import optuna

    for attempt in range(tries):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except Exception as exc:
            if "already exists" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


@contextmanager
def storage_errors(loaded: LoadedRecipe, root: Path):
    """A full (or read-only) disk while a trial or the study's storage writes is exit 3 (1) naming what was
    written, not Optuna's AssertionError or StorageInternalError on top of SQLite's "database or disk is
    full"; the study is as a killed sweep leaves it, and the same command resumes it once there is room."""
    from adaptctl.core.errors import AdaptctlError

    try:
        yield
    except AdaptctlError:
        raise
    except Exception as exc:
        if (full := disk_failure(exc, _written(storage_url(loaded.recipe.sweep, root)))) is None:
            raise
        raise full from None


def _written(url: str) -> str:
    """What a storage URL writes to, for a message: its SQLite file, else the URL without its password."""
    return url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else shown_url(url)


def _reason(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def study_name(loaded: LoadedRecipe) -> str:
    """The study's name in its storage, redacted: the storage is a file (or a database) of its own."""
    assert loaded.recipe.sweep is not None  # sweep() refuses a recipe without a sweep section
    return redact(loaded.recipe.sweep.study_name or loaded.recipe.name)


def claim_directory(loaded: LoadedRecipe, root: Path):
    """A run directory holds one study's trials/<n>, results.csv and best.yaml: the first sweep in it
    records its study (name and storage) in sweep/study.json, and another study there is refused, as
    its trials would start again at trials/0, over the first study's."""
    assert loaded.recipe.sweep is not None  # sweep() refuses a recipe without a sweep section
    url = loaded.recipe.sweep.storage
    owner = {"study_name": study_name(loaded), "storage": redact(shown_url(url)) if url else None}
    path = root / "sweep" / OWNER_FILE
    recorded = read_json_object(path)
    if not recorded:
        atomic_write_json(path, owner)
        return
    if {key: recorded.get(key) for key in owner} != owner:
        where = (loaded.positions.get(("sweep", "study_name")) or loaded.positions.get(("sweep", "storage"))
                 or Where(str(loaded.path)))
        were = f"study {recorded.get('study_name')} in {recorded.get('storage') or 'its own study.db'}"
        raise UserError(f"{where}: sweep: {root} holds the trials of {were}; study {owner['study_name']} in "
                        f"{owner['storage'] or 'its own study.db'} would start again at trials/0, over them",
                        hint=f"give another study its own --run-dir, or go back to the study in {path}")


def open_study(loaded: LoadedRecipe, storage, space: Space, worker: int = 0):
    import optuna

    sweep = loaded.recipe.sweep
    assert sweep is not None  # sweep() refuses a recipe without a sweep section
    study = optuna.create_study(storage=storage, study_name=study_name(loaded),
                                direction=sweep.chosen_direction(), load_if_exists=True,
                                pruner=_pruner(sweep))
    _check_same_direction(study, sweep, loaded)
    _check_same_question(study, loaded)
    _check_same_inputs(study, loaded, space)
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
                        hint="keep the metric and direction of the earlier sweep, or start another study in "
                             "another --run-dir")


def question(recipe) -> str:
    """What a study answers: the recipe its trials vary and the search space, not the budget, storage or
    name, which a re-run may change (n_trials: 8 -> 12 adds trials to the same study)."""
    from adaptctl.core.rundir import json_hash

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
                        hint="start another study in another --run-dir (with a shared sweep.storage, under another "
                             "sweep.study_name), or undo the change")


def study_inputs(loaded: LoadedRecipe, space: Space) -> dict:
    """The content keys of what the trials read beyond the recipe, as the stages key them (data files, a local
    model folder, an earlier run named as model.base, a teacher), and of the local files, folders and runs
    that a swept value names.  None for what cannot be read now: a trial that needs it fails on its own."""
    from adaptctl.run import freshness
    from adaptctl import pipeline

    found = {}
    ctx = pipeline.context(loaded, RunDir(loaded.path.parent))  # no stage's inputs read the run directory
    for stage in (s for s in freshness.plan(loaded.recipe) if s != "export"):
        try:
            found.update(freshness.all_inputs(stage, ctx))
        except UserError:
            pass
    for path, values in ((p.path, p.choices) for p in space.parameters if p.choices is not None):
        for value in values:
            if isinstance(value, str) and (key := _local_content(value, loaded.path.parent)) is not None:
                found[redact(f"{path} ({value})")] = key
    return found


def _local_content(value: str, recipe_dir: Path) -> str | dict | None:
    """A local file's or model folder's content hash, or an earlier run's model stage key (None: not local)."""
    local = Path(value).expanduser()
    local = local if local.is_absolute() else recipe_dir / local
    if not local.exists():
        return None
    if is_run_directory(local):
        found = run_model_folder(local)
        return {"stage": found[1], "key": (RunDir(local).read_manifest(found[1]) or {}).get("key")} if found else None
    try:
        return content_hash(local)
    except (OSError, UserError):
        return None


def _check_same_inputs(study, loaded: LoadedRecipe, space: Space):
    """A study whose data file or model folder changed since its trials ran would rank trials of the old
    content beside trials of the new: refused, naming what changed."""
    from adaptctl.run.freshness import input_name

    now, stored = study_inputs(loaded, space), study.user_attrs.get(INPUTS) or {}
    changed = sorted(name for name, key in now.items() if key is not None and stored.get(name) not in (None, key))
    if changed:
        raise UserError(f"{loaded.path}: sweep: the content of {', '.join(map(input_name, changed))} changed since "
                        f"the study {study.study_name} ran its trials; their results would not compare with new ones",
                        hint="put the earlier content back, or start a new study in another --run-dir")
    known = {**stored, **{name: key for name, key in now.items() if key is not None}}
    if known != stored:  # what could not be read before (a missing file) is keyed from now on
        study.set_user_attr(INPUTS, known)


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
            console.info(f"sweep: {shown(trial)} was interrupted; it runs again in trials/{number}")


def directory_number(trial) -> int:
    """The n of the trial's directory trials/<n>: its own number, or the interrupted trial's it continues."""
    return trial.user_attrs.get(RESUMES, trial.number)


def shown(trial) -> str:
    """A trial as the log and report name it: by its directory, trials/<n>, which a resumed trial shares with
    the interrupted one it continues (Optuna gives the resumed run a number of its own, said beside it)."""
    number = directory_number(trial)
    return f"trial {number}" if number == trial.number else f"trial {number} (resumed; Optuna trial {trial.number})"


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
