"""The run directory: atomic files and folders, manifests, hashes and the lock."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adaptctl.core import rundir
from adaptctl.core.errors import RunFailed, UserError
from adaptctl.core.rundir import RunDir, atomic_dir, atomic_write_json, atomic_write_text, file_hash, json_hash


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


# ------------------------------------------------------------- atomic files
def test_atomic_write_text_writes_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    assert atomic_write_text(target, "one") == target
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert leftovers(target.parent) == []


def test_atomic_write_json_round_trips(tmp_path):
    target = atomic_write_json(tmp_path / "m.json", {"b": 1, "a": [1.5, None], "p": Path("x")})
    assert json.loads(target.read_text()) == {"b": 1, "a": [1.5, None], "p": "x"}


@pytest.mark.parametrize("code, error, words", [
    (errno.ENOSPC, RunFailed, "no space left"),
    (errno.EACCES, UserError, "cannot write"),
    (errno.EROFS, UserError, "cannot write"),
])
def test_failed_write_keeps_the_old_content(tmp_path, monkeypatch, code, error, words):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")

    def failing_replace(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(rundir.os, "replace", failing_replace)
    with pytest.raises(error) as info:
        atomic_write_text(target, "new")
    assert str(target) in info.value.message
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_failure_while_writing_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_other_os_errors_pass_through(tmp_path, monkeypatch):
    def failing_replace(src, dst):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(rundir.os, "replace", failing_replace)
    with pytest.raises(OSError) as info:
        atomic_write_text(tmp_path / "a.txt", "x")
    assert info.value.errno == errno.EIO
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------- atomic folders
def test_atomic_dir_replaces_the_old_folder_on_success(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        (tmp / "new.bin").write_text("new")
        assert (target / "old.bin").exists()  # untouched until the block succeeds
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]
    assert leftovers(tmp_path) == []


def test_atomic_dir_keeps_the_old_folder_on_failure(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.bin").write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["old.bin"]
    assert leftovers(tmp_path) == []


def test_atomic_dir_creates_nothing_on_failure(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "deep" / "model"):
            raise KeyboardInterrupt
    assert not (tmp_path / "deep" / "model").exists()
    assert leftovers(tmp_path / "deep") == []


def test_atomic_dir_clears_a_temp_folder_left_by_a_killed_run(tmp_path):
    stale = tmp_path / f".model.tmp-{os.getpid()}"
    stale.mkdir()
    (stale / "junk").write_text("x")
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "a").write_text("a")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["a"]


# ------------------------------------------------------------------ hashes
def test_file_hash_follows_content_and_names(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "a").write_text("1")
    first = file_hash(folder)
    assert file_hash(folder) == first
    (folder / "a").write_text("2")
    second = file_hash(folder)
    assert second != first
    (folder / "a").rename(folder / "b")
    assert file_hash(folder) != second
    assert file_hash(folder / "b") == file_hash(folder / "b") and len(file_hash(folder / "b")) == 64


def test_json_hash_ignores_key_order():
    assert json_hash({"a": 1, "b": [1, 2]}) == json_hash({"b": [1, 2], "a": 1})
    assert json_hash({"a": 1}) != json_hash({"a": 2})


# --------------------------------------------------------------- manifests
def test_manifest_round_trip_and_require(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(UserError) as info:
        run.require("prepare", needed_by="train")
    assert "train needs a complete prepare stage" in info.value.message
    assert "adaptctl prepare" in info.value.hint

    run.write_manifest("prepare", status="running", key="k1")
    assert not run.is_complete("prepare")
    with pytest.raises(UserError):
        run.require("prepare", needed_by="train")

    run.write_manifest("prepare", status="complete", key="k1", outputs={"data": "prepare/data"})
    manifest = run.require("prepare", needed_by="train")
    assert manifest["stage"] == "prepare" and manifest["outputs"] == {"data": "prepare/data"}
    assert set(manifest["versions"]) >= {"adaptctl", "torch", "transformers", "peft"}
    assert run.is_complete("prepare") and run.is_complete("prepare", "k1") and not run.is_complete("prepare", "k2")


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_corrupt_manifest_reads_as_absent(tmp_path, content):
    run = RunDir(tmp_path)
    run.manifest_path("train").parent.mkdir()
    run.manifest_path("train").write_bytes(content)
    assert run.read_manifest("train") is None
    assert not run.is_complete("train")


# -------------------------------------------------------------------- lock
HOLDER = textwrap.dedent("""
    import sys, time
    from adaptctl.core.rundir import RunDir
    with RunDir(sys.argv[1]).lock():
        print("locked", flush=True)
        time.sleep(120)
""")


@pytest.fixture
def holder(tmp_path):
    """A second process that holds the lock of tmp_path/run until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_lock_refuses_a_second_process_naming_the_lock_and_pid(tmp_path, holder):
    run = RunDir(tmp_path / "run")
    with pytest.raises(UserError) as info:
        with run.lock():
            pytest.fail("the lock was taken twice")
    message = info.value.render()
    assert str(tmp_path / "run" / ".lock") in message
    assert f"pid {holder.pid}" in message
    assert "--run-dir" in message


def test_lock_from_a_killed_process_is_taken_over(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    lock_file = tmp_path / "run" / ".lock"
    assert lock_file.read_text().strip() == str(holder.pid)  # the stale file is still there
    with RunDir(tmp_path / "run").lock():
        assert lock_file.read_text().strip() == str(os.getpid())


def test_lock_is_released_after_the_block(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock():
        pass
    with run.lock():  # again, in this process
        pass
    with pytest.raises(ValueError):
        with run.lock():
            raise ValueError("stage failed")
    with run.lock():
        pass


def test_lock_on_an_unusable_run_directory_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError) as info:
        with RunDir(tmp_path / "file" / "run").lock():
            pass
    assert "cannot use" in info.value.message and "--run-dir" in info.value.hint


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_process_are_cleared(tmp_path):
    RunDir(tmp_path).claim()  # only inside a run directory (or the cache) are look-alike names adaptctl's
    pid = dead_pid()
    (tmp_path / f".model.tmp-{pid}").mkdir()
    (tmp_path / f".model.old-{pid}").mkdir()
    (tmp_path / f".metrics.json.tmp-{pid}").write_text("{half")
    live = tmp_path / f".model.tmp-{os.getppid()}"  # a live process's work in progress stays
    live.mkdir()
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "a").write_text("a")
    atomic_write_json(tmp_path / "metrics.json", {})
    assert leftovers(tmp_path) == [live.name]


def test_disk_full_inside_atomic_dir_names_the_target(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(RunFailed) as info:
        with atomic_dir(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(target) in info.value.message
    assert (target / "old").read_text() == "old" and leftovers(tmp_path) == []


def test_look_alike_leftovers_outside_a_run_directory_are_left_alone(tmp_path):
    """predict --output writes atomically into a user's folder: a file there that happens to be named like
    a dead process's temp file is the user's, not adaptctl's."""
    theirs = tmp_path / f".out.jsonl.tmp-{dead_pid()}"
    theirs.write_text("mine")
    atomic_write_text(tmp_path / "out.jsonl", "{}\n")
    assert theirs.read_text() == "mine"



@pytest.mark.parametrize("name, parsed", [
    (".model.tmp-12", ("model", "tmp", 12)),
    (".metrics.json.old-7", ("metrics.json", "old", 7)),
    (".m-0a1b.old-3", ("m-0a1b", "old", 3)),      # a dash in the target's own name
    ("model.old-12", None),                        # no leading dot: not adaptctl's name
    (".model.new-12", None),                       # neither tmp nor old
    (".model.old-abc", None),                      # no pid
    ("..old-12", None),                            # no target
])
def test_parse_leftover_reads_back_the_names_adaptctl_gives(name, parsed):
    assert rundir.parse_leftover(name) == parsed


def test_leftover_path_round_trips_through_parse_leftover(tmp_path):
    made = rundir.leftover_path(tmp_path / "lengths.png", "old")
    assert made.parent == tmp_path and rundir.parse_leftover(made.name) == ("lengths.png", "old", os.getpid())


# ------------------------------------------------------------- the run's model
def make_model_stage(run: RunDir, stage: str, status: str = "complete", model: bool = True):
    run.write_manifest(stage, status=status)
    if model:
        (run.stage(stage) / "model").mkdir()


def test_run_model_folder_prefers_export_then_distill_then_train(tmp_path):
    run = RunDir(tmp_path)
    assert rundir.run_model_folder(tmp_path) is None
    make_model_stage(run, "train")
    assert rundir.run_model_folder(tmp_path) == (tmp_path / "train" / "model", "train")
    make_model_stage(run, "distill")
    assert rundir.run_model_folder(tmp_path) == (tmp_path / "distill" / "model", "distill")
    make_model_stage(run, "export")
    assert rundir.run_model_folder(str(tmp_path)) == (tmp_path / "export" / "model", "export")


@pytest.mark.parametrize("status", ["running", "failed", "interrupted"])
def test_run_model_folder_passes_over_a_stage_that_is_not_complete(tmp_path, status):
    run = RunDir(tmp_path)
    make_model_stage(run, "train")
    make_model_stage(run, "export", status=status)
    make_model_stage(run, "distill", model=False)  # complete, but without a model/ folder
    assert rundir.run_model_folder(tmp_path) == (tmp_path / "train" / "model", "train")


# ------------------------------------------------------------- whose folder it is
def test_a_new_or_empty_folder_is_marked_and_used_again(tmp_path):
    for root in (tmp_path / "new" / "run", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        with RunDir(root).lock():
            pass
        marker = json.loads((root / rundir.MARKER).read_text())
        assert marker["adaptctl_run_directory"] == rundir.MARKER_VERSION and marker["created_at"]
        (root / "prepare").mkdir()
        with RunDir(root).lock():  # marked: not empty any more, and still ours
            pass


def test_a_users_folder_is_refused_and_left_untouched(tmp_path):
    user = tmp_path / "p"
    (user / "train" / "checkpoints").mkdir(parents=True)
    (user / "prepare").mkdir()
    (user / "prepare" / "IMPORTANT.txt").write_text("x")
    before = sorted(str(p.relative_to(user)) for p in user.rglob("*"))
    with pytest.raises(UserError) as info:
        with RunDir(user).lock():
            pytest.fail("a user's folder was taken as a run directory")
    assert str(user) in info.value.message and rundir.MARKER in info.value.message
    assert "empty or new --run-dir" in info.value.hint
    assert sorted(str(p.relative_to(user)) for p in user.rglob("*")) == before  # not even a .lock


@pytest.mark.parametrize("given", ["", "/", "HOME"])
def test_the_current_directory_as_empty_the_root_and_home_are_refused(given, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(UserError) as info:
        with RunDir(str(home) if given == "HOME" else given).lock():
            pytest.fail("taken as a run directory")
    assert "--run-dir" in info.value.message + info.value.hint
    assert not (home / rundir.MARKER).exists() and not (home / ".lock").exists()


def test_a_run_directory_of_an_earlier_adaptctl_is_adopted(tmp_path):
    earlier = tmp_path / "earlier"
    (earlier / "prepare").mkdir(parents=True)
    (earlier / ".lock").write_text("123")
    (earlier / "recipe.yaml").write_text("name: x\n")
    (earlier / "prepare" / "manifest.json").write_text(json.dumps({"stage": "prepare", "status": "complete"}))
    with RunDir(earlier).lock():
        pass
    assert (earlier / rundir.MARKER).is_file()
    # the same files without the lock (or a manifest that is not a stage's) are someone else's
    lookalike = tmp_path / "lookalike"
    (lookalike / "prepare").mkdir(parents=True)
    (lookalike / "recipe.yaml").write_text("name: x\n")
    (lookalike / "prepare" / "manifest.json").write_text(json.dumps({"stage": "prepare"}))
    with pytest.raises(UserError):
        with RunDir(lookalike).lock():
            pass
