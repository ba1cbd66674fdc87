"""The shared primitives: the crash-safe folder replace and the run lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adaptctl.core import rundir
from adaptctl.core.rundir import RunDir, atomic_dir, replace_dir

# A process that replaces ROOT/prepare and is SIGKILLed at STEP: "between" the two renames, or
# "after" them (the new folder is in place, the backup not yet removed).
KILLED_REPLACE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from adaptctl.core import rundir

    root, step = Path(sys.argv[1]), sys.argv[2]
    def die(*_):
        os.kill(os.getpid(), signal.SIGKILL)
    real = rundir._put_in_place
    if step == "between":
        rundir._put_in_place = die
    else:
        rundir._put_in_place = lambda new, target: (real(new, target), die())
    new = root / "new-prepare"
    new.mkdir()
    (new / "data.txt").write_text("new")
    rundir.replace_dir(new, root / "prepare")
""")


def killed_replace(root: Path, step: str) -> int:
    proc = subprocess.Popen([sys.executable, "-c", KILLED_REPLACE, str(root), step])
    assert proc.wait(timeout=60) == -signal.SIGKILL
    return proc.pid


@pytest.fixture
def run(tmp_path) -> Path:
    root = tmp_path / "run"
    RunDir(root).claim()
    (root / "prepare").mkdir()
    (root / "prepare" / "data.txt").write_text("old")
    return root


def test_a_kill_between_the_renames_leaves_a_backup_that_the_next_lock_puts_back(run):
    pid = killed_replace(run, "between")
    assert not (run / "prepare").exists() and (run / f".prepare.old-{pid}" / "data.txt").is_file()
    with RunDir(run).lock():
        assert (run / "prepare" / "data.txt").read_text() == "old"
    assert not (run / f".prepare.old-{pid}").exists()


def test_a_kill_after_the_renames_keeps_the_new_folder_and_removes_the_backup(run):
    pid = killed_replace(run, "after")
    assert (run / f".prepare.old-{pid}").is_dir()
    with RunDir(run).lock():
        assert (run / "prepare" / "data.txt").read_text() == "new"
    assert not (run / f".prepare.old-{pid}").exists()


def test_a_backup_deeper_in_the_run_is_put_back_too(run):
    model = run / "train" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    pid = dead_pid()
    os.replace(model, run / "train" / f".model.old-{pid}")  # what a kill between the renames leaves
    with RunDir(run).lock():
        assert (model / "config.json").read_text() == "{}"


def test_the_next_atomic_dir_puts_a_backup_back_before_it_starts(run):
    pid = dead_pid()
    os.replace(run / "prepare", run / f".prepare.old-{pid}")
    with pytest.raises(RuntimeError):
        with atomic_dir(run / "prepare"):
            assert (run / "prepare" / "data.txt").read_text() == "old"
            raise RuntimeError("the new one fails")
    assert (run / "prepare" / "data.txt").read_text() == "old"


def test_an_error_in_the_second_rename_puts_the_old_folder_back_at_once(run, monkeypatch):
    def refuse(new, target):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(rundir, "_put_in_place", refuse)
    new = run / "new"
    new.mkdir()
    with pytest.raises(OSError):
        replace_dir(new, run / "prepare")
    assert (run / "prepare" / "data.txt").read_text() == "old"
    assert sorted(p.name for p in run.iterdir() if ".old-" in p.name) == []


def test_unrelated_files_are_never_removed_or_renamed(run, tmp_path):
    pid = dead_pid()
    keep = {
        run / "notes.old-123": "file",                          # no leading dot: not adaptctl's name
        run / f".prepare.old-{os.getppid()}": "dir",            # a live process's backup
        run / ".prepare.old-abc": "dir",                        # not a pid
        run / f".prepare.bak-{pid}": "dir",                     # not a kind adaptctl writes
        run / "prepare" / "mine.txt": "file",                   # inside the target: replaced with it, not touched by recover
    }
    for path, kind in keep.items():
        path.mkdir() if kind == "dir" else path.write_text("x")
    with RunDir(run).lock():
        pass
    assert all(path.exists() for path in keep)

    # Outside a run directory (predict --output's folder) a look-alike backup is the user's own.
    user = tmp_path / "user"
    user.mkdir()
    (user / f".out.old-{pid}").mkdir()
    with atomic_dir(user / "other") as tmp:
        (tmp / "x").write_text("x")
    with atomic_dir(user / "out") as tmp:
        (tmp / "x").write_text("x")
    assert (user / f".out.old-{pid}").is_dir() and (user / "out" / "x").is_file()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
