"""adaptctl sweep on a real PostgreSQL: a throwaway cluster (initdb into a temporary folder as the postgres user,
a free port on 127.0.0.1, stopped at the end), two `adaptctl sweep` processes sharing one study as two machines
would (each its own run directory, one database), one of them killed mid-trial and launched again: its trial is
queued again and finished, and the study's results equal a one-worker sweep's on the same database.
Skipped, with the reason, only where the PostgreSQL binaries are missing."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_sweep import read_results, write_recipe
from tiny_classifier import tiny_classifier_recipe

from adaptctl.sweep.study import with_driver

BIN = Path(os.environ.get("ADAPTCTL_PG_BIN", "/usr/lib/postgresql/15/bin"))
# A grid of three; each trial long enough (16 steps) for a worker to be killed in the middle of one.
SPACE = """  metric: eval_loss
  pruner: none
  parameters:
    train.learning_rate: [1.0e-3, 3.0e-3, 1.0e-2]
"""
TRAIN = "train: {max_steps: 16, batch_size: 8, precision: fp32, validate: true, eval_every: 16, logging_steps: 4}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_owner(command: list, owner: str | None) -> list:
    """initdb and the server refuse to run as root: as root, they run as the postgres user."""
    return ["runuser", "-u", owner, "--", *map(str, command)] if owner else list(map(str, command))


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster of its own: its URL (psycopg), stopped and removed at the end."""
    if not (BIN / "initdb").exists() or not (BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL binaries not found in {BIN} (Debian: apt install postgresql-15; or set ADAPTCTL_PG_BIN)")
    owner = None
    if os.geteuid() == 0:
        owner = "postgres"
        try:
            pwd.getpwnam(owner)
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
    # Directly under the temporary folder: pytest's own tmp folders are private to root, unreadable to postgres.
    root = Path(tempfile.mkdtemp(prefix="adaptctl-pg-"))
    if owner:
        shutil.chown(root, owner)
    data, port = root / "data", _free_port()
    subprocess.run(_as_owner([BIN / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
                             owner), check=True, capture_output=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    subprocess.run(_as_owner([BIN / "pg_ctl", "-D", data, "-o", options, "-l", root / "server.log", "-w", "start"], owner),
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_owner([BIN / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], owner), check=False,
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _worker(recipe: Path, run: Path, log: Path) -> subprocess.Popen:
    """One machine's `adaptctl sweep`: its own session, so a kill takes everything it started."""
    return subprocess.Popen([sys.executable, "-m", "adaptctl", "sweep", str(recipe), "--run-dir", str(run), "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def paused_in_a_trial(storage: str, study_name: str, pid: int, deadline: float):
    """The trial that process `pid` runs, with its values drawn, and the process paused (SIGSTOP) while the
    trial is still running in the database: what is done to the process next lands in the middle of a trial.
    (Without the pause, a trial of a second may end between the check and the signal on a loaded machine.)"""
    import optuna
    from optuna.trial import TrialState

    while time.monotonic() < deadline:
        try:
            trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
        except Exception:  # the study not made yet, the database busy  # noqa: BLE001
            trials = []
        for trial in trials:
            if trial.state == TrialState.RUNNING and trial.user_attrs.get("pid") == pid and trial.params:
                os.kill(pid, signal.SIGSTOP)
                study = optuna.load_study(study_name=study_name, storage=storage)
                if study.trials[trial.number].state == TrialState.RUNNING:
                    return trial
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError(f"process {pid} started no trial in time")


def _values(study) -> dict:
    """learning rate -> eval_loss of every completed trial."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return {t.params["train.learning_rate"]: t.value for t in done}


def test_two_machines_share_a_postgres_study_and_a_killed_workers_trial_is_run_again(postgres, tmp_path, run_cli):
    import optuna

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    tiny_classifier_recipe(tiny)
    # The reference: one worker, its own study in the same database.
    one = write_recipe(tiny, tmp_path / "one", SPACE + f"  storage: {postgres}\n  study_name: one-worker\n", train=TRAIN)
    code, _, err = run_cli(["sweep", one, "--run-dir", tmp_path / "one" / "run", "--threads", "1"])
    assert code == 0, err
    storage = with_driver(postgres)  # the URL as adaptctl opens it (psycopg)
    reference = _values(optuna.load_study(study_name="one-worker", storage=storage))
    assert len(reference) == 3

    # Two machines: machine a and machine b, each with its run directory, one study.
    shared = write_recipe(tiny, tmp_path / "shared", SPACE + f"  storage: {postgres}\n  study_name: two-machines\n", train=TRAIN)
    runs = {name: tmp_path / f"machine-{name}" for name in "ab"}
    a, b = _worker(shared, runs["a"], tmp_path / "a.log"), _worker(shared, runs["b"], tmp_path / "b.log")
    try:
        deadline = time.monotonic() + 240
        while True:  # the study exists once a worker opened it
            try:
                study = optuna.load_study(study_name="two-machines", storage=storage)
                break
            except KeyError:
                assert time.monotonic() < deadline, (tmp_path / "a.log").read_text()[-2000:]
                time.sleep(0.2)
        killed = paused_in_a_trial(storage, "two-machines", a.pid, deadline)
        os.killpg(a.pid, signal.SIGKILL)  # machine a is preempted in the middle of a trial
        a.wait(timeout=60)
        again = _worker(shared, runs["a"], tmp_path / "a-again.log")  # and its job starts again
        codes = [again.wait(timeout=300), b.wait(timeout=300)]
    finally:
        for process in (a, b):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    assert codes == [0, 0], (tmp_path / "a-again.log").read_text()[-2000:] + (tmp_path / "b.log").read_text()[-2000:]
    assert f"trial {killed.number} was interrupted; it runs again in trials/{killed.number}" in \
        (tmp_path / "a-again.log").read_text()

    study = optuna.load_study(study_name="two-machines", storage=storage)
    trials = study.get_trials(deepcopy=False)
    redone = [t for t in trials if t.user_attrs.get("resumes") == killed.number]
    assert len(redone) == 1 and redone[0].params == killed.params and redone[0].state.name == "COMPLETE"
    assert study.trials[killed.number].state.name == "FAIL" and study.trials[killed.number].user_attrs.get("interrupted")
    assert {t.user_attrs["pid"] for t in trials} >= {a.pid, b.pid}  # both machines took trials
    # finished by whichever machine took it from the queue, in its trials/<n>
    assert any((runs[m] / "trials" / str(killed.number) / "train" / "model").is_dir() for m in "ab")
    # The same grid, the same values as the one worker's, each point run once.
    values = _values(study)
    assert values.keys() == reference.keys()
    for point, value in reference.items():
        assert values[point] == pytest.approx(value, rel=1e-5), point
    # Either machine's sweep, run again, runs nothing and writes the whole table from the database.
    code, _, err = run_cli(["sweep", shared, "--run-dir", runs["b"], "--threads", "1"])
    assert code == 0, err
    assert sorted(r["state"] for r in read_results(runs["b"])) == ["complete"] * 3 + ["interrupted"]
