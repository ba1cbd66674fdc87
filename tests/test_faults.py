"""Faults: SIGKILL at random points of every stage (distill included), a full or read-only disk while saving, and
re-runs that fail on their input.  What they must never do: show a half-written file, keep a
re-run from completing with the outputs of an undisturbed run, or damage what a completed run
produced.

One tiny random BERT classifier (the packaged MiniLM tokenizer) on a small csv; an undisturbed
run, one subprocess per stage, is the reference.  Each kill test copies the reference's completed
upstream stages into a fresh run directory, starts the stage in its own process group, waits for
its manifest to say `running`, sleeps a delay drawn from a seeded RNG within the stage's measured
duration, and SIGKILLs the group (the export's verifying child too).  Related guarantees tested
elsewhere: killed and stopped training resumes to the same weights and a half-written newest
checkpoint is skipped (test_resume.py), atomic files, folders and the lock (test_rundir.py).
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[1]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
STAGES = ("prepare", "train", "evaluate", "export")
UPSTREAM = {"prepare": (), "train": ("prepare",), "evaluate": ("prepare", "train"), "export": ("prepare", "train"),
            "distill": ("prepare",)}
SEEDS = (1, 2)
# Each stage under two seeds; distill (a second training stage, the costliest) under one.
KILLS = [(stage, seed) for stage in STAGES for seed in SEEDS] + [("distill", SEEDS[0])]
WORDS = {"pos": "great lovely happy wonderful superb fine", "neg": "awful broken sad terrible horrible poor"}
RECIPE = {
    "name": "faults", "task": "classification", "seed": 3,
    "model": {"base": "base"},  # relative: resolved against the recipe's folder, not the cwd
    "data": {"source": "data.csv", "text": "text", "label": "label", "max_length": 24,
             "splits": {"validation": 0.1, "test": 0.2}},
    "method": {"name": "full"},
    "train": {"max_steps": 8, "save_every": 2, "batch_size": 8, "learning_rate": 1e-3, "precision": "fp32",
              "logging_steps": 1},
}


# ------------------------------------------------------------------ helpers
def env(cache: Path) -> dict:
    """A process of its own: its own prepare cache, so a re-run computes instead of copying the reference's."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "ADAPTCTL_CACHE": str(cache),
            "HF_DATASETS_CACHE": str(cache / "datasets")}


def cli(args, cache: Path, cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adaptctl", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env(cache))


def manifest(run: Path, stage: str) -> dict | None:
    try:
        return json.loads((run / stage / "manifest.json").read_text())
    except FileNotFoundError:
        return None


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_leftovers(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if ".tmp" in p.name or ".old-" in p.name)


def assert_nothing_half_written(run: Path):
    """Every structured file parses; a model folder that exists loads; a complete manifest's outputs exist."""
    from safetensors.torch import load_file

    for path in run.rglob("*"):
        if "checkpoints" in path.parts or not path.is_file():
            continue  # the Trainer's checkpoints are validated on resume (checkpoints.last_whole)
        if any(".tmp" in part for part in path.relative_to(run).parts):
            continue  # what the killed process was writing (.model.tmp/...): the re-run clears it, see temp_leftovers
        if path.name in ("manifest.json", "metrics.json", "stats.json", "labels.json", "adaptctl.json", "config.json"):
            assert isinstance(json.loads(path.read_text()), dict), path
        elif path.name in ("predictions.jsonl", "predictions.base.jsonl"):
            assert all(json.loads(line) for line in path.read_text().splitlines()), path
        elif path.name == "recipe.yaml":
            assert isinstance(yaml.safe_load(path.read_text()), dict), path
        elif path.suffix == ".safetensors":
            assert load_file(path), path
    for folder in (run / "train" / "model", run / "distill" / "model", run / "export" / "model"):
        if folder.exists():
            assert {"config.json", "adaptctl.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    for stage in (*STAGES, "distill"):
        found = manifest(run, stage)
        if found and found["status"] == "complete":
            missing = [rel for rel in found["outputs"].values() if not (run / rel).exists()]
            assert not missing, f"{stage} says complete but lacks {missing}"


# ------------------------------------------------------------------ the undisturbed run
class World:
    def __init__(self, root: Path):
        self.root, self.recipe, self.reference = root, root / "recipe.yaml", root / "reference"
        # distillation: the reference run is the teacher of a one-layer student, on the same prepared data
        self.distill_recipe, self.distill_reference = root / "distill.yaml", root / "reference-distill"

    def recipe_for(self, stage: str) -> Path:
        return self.distill_recipe if stage == "distill" else self.recipe

    def reference_for(self, stage: str) -> Path:
        return self.distill_reference if stage == "distill" else self.reference

    def wall(self, stage: str) -> float:
        return manifest(self.reference_for(stage), stage)["wall_seconds"]

    def seeded(self, run: Path, stages) -> Path:
        """A run directory holding copies of the reference's completed `stages`."""
        run.mkdir(parents=True)
        for stage in stages:
            shutil.copytree(self.reference / stage, run / stage)
        shutil.copy(self.reference / "recipe.yaml", run / "recipe.yaml")
        shutil.copy(self.reference / ".adaptctl-run", run / ".adaptctl-run")  # a copy of a run directory, as cp -r makes
        return run


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from adaptctl.models.resolve import resolve_model

    world = World(tmp_path_factory.mktemp("faults"))
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(MINILM).path))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertForSequenceClassification(config).save_pretrained(world.root / "base")
    tokenizer.save_pretrained(world.root / "base")
    rng = random.Random(0)
    rows = ["text,label"] + [" ".join(rng.choices(WORDS[label].split() + ["the", "item"], k=6)) + f",{label}"
                             for _ in range(50) for label in WORDS]
    (world.root / "data.csv").write_text("\n".join(rows) + "\n")
    world.recipe.write_text(yaml.safe_dump(RECIPE, sort_keys=False))
    # One process per stage, as the killed ones run, so that each manifest's wall_seconds is the
    # stage's duration in a process of its own; from another folder: paths resolve against the recipe.
    for stage in STAGES:
        done = cli([stage, world.recipe, "--run-dir", world.reference], world.root / "cache-reference", cwd=PROJECT)
        assert done.returncode == 0, done.stderr
    assert all(manifest(world.reference, s)["status"] == "complete" for s in STAGES)
    world.distill_recipe.write_text(yaml.safe_dump(
        {**RECIPE, "name": "faults-distill", "distill": {"teacher": "reference", "student": {"layers": 1}}}, sort_keys=False))
    world.seeded(world.distill_reference, ["prepare"])
    done = cli(["distill", world.distill_recipe, "--run-dir", world.distill_reference], world.root / "cache-reference",
               cwd=PROJECT)
    assert done.returncode == 0, done.stderr
    return world


# ------------------------------------------------------------------ what "equal" means per stage
def same_prepare(reference: Path, run: Path):
    # bit-equal: the arrow data, its metadata, stats.json, labels.json and the plot
    expected, actual = tree(reference / "prepare"), tree(run / "prepare")
    expected.pop("manifest.json"), actual.pop("manifest.json")
    assert actual.keys() == expected.keys()
    assert [k for k in expected if actual[k] != expected[k]] == []


def same_train(reference: Path, run: Path, stage: str = "train"):
    import torch
    from safetensors.torch import load_file

    expected = load_file(reference / stage / "model" / "model.safetensors")
    actual = load_file(run / stage / "model" / "model.safetensors")
    assert actual.keys() == expected.keys()
    for key, value in expected.items():  # fp32 on CPU: a resumed run replays the same steps
        torch.testing.assert_close(actual[key], value, rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
    rows = [json.loads(line) for line in (run / stage / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, RECIPE["train"]["max_steps"] + 1))
    assert manifest(run, stage)["steps"] == RECIPE["train"]["max_steps"]


def same_evaluate(reference: Path, run: Path):
    def stable(path: Path) -> dict:  # throughput is a measurement, not a result
        document = json.loads(path.read_text())
        return {k: v for k, v in document.items() if "per_second" not in k}

    assert stable(run / "evaluate" / "metrics.json") == stable(reference / "evaluate" / "metrics.json")
    assert (run / "evaluate" / "predictions.jsonl").read_text() == (reference / "evaluate" / "predictions.jsonl").read_text()


def same_export(reference: Path, run: Path):
    import torch
    from safetensors.torch import load_file

    names = sorted(p.name for p in (reference / "export" / "model").iterdir())
    assert sorted(p.name for p in (run / "export" / "model").iterdir()) == names
    expected = load_file(reference / "export" / "model" / "model.safetensors")
    actual = load_file(run / "export" / "model" / "model.safetensors")
    assert actual.keys() == expected.keys() and all(torch.equal(actual[k], expected[k]) for k in expected)
    for name in ("config.json", "adaptctl.json", "tokenizer.json"):
        assert (run / "export" / "model" / name).read_bytes() == (reference / "export" / "model" / name).read_bytes()


SAME = {"prepare": same_prepare, "train": same_train, "evaluate": same_evaluate, "export": same_export,
        "distill": lambda reference, run: same_train(reference, run, "distill")}

# What a process killed at an unlucky moment leaves behind, by the names each writer uses; the
# re-run must clear it (a pid that is dead, so it is not a live run's work in progress).
DEBRIS = {
    "prepare": [".prepare.tmp-{pid}/", ".prepare.old-{pid}/", ".recipe.yaml.tmp-{pid}"],
    "train": ["train/.model.tmp/", "train/.model.old-{pid}/", "train/.loss.png.tmp-{pid}", "train/.manifest.json.tmp-{pid}"],
    "evaluate": ["evaluate/.metrics.json.tmp-{pid}", "evaluate/.predictions.jsonl.tmp-{pid}",
                 "evaluate/.confusion_matrix.png.tmp-{pid}"],
    "export": ["export/.model.tmp-{pid}/", "export/.model.old-{pid}/"],
    "distill": ["distill/.model.tmp/", "distill/.model.old-{pid}/", "distill/.loss.png.tmp-{pid}"],
}


def plant_debris(run: Path, stage: str):
    pid = dead_pid()
    for name in DEBRIS[stage]:
        path = run / name.format(pid=pid).rstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            # The kill may already have left this very folder (the fixed-name ones): half-fill it too.
            path.mkdir(exist_ok=True)
            (path / "model.safetensors").write_bytes(b"half")
        else:
            path.write_text('{"half')


def kill_during(stage: str, world: World, run: Path, delay: float, cache: Path, log: Path) -> str:
    """Start `adaptctl STAGE`; once it is running, SIGKILL its process group after `delay` seconds."""
    process = subprocess.Popen([sys.executable, "-m", "adaptctl", stage, str(world.recipe_for(stage)), "--run-dir", str(run)],
                               cwd=PROJECT, env=env(cache), stdout=subprocess.DEVNULL, stderr=log.open("w"),
                               start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while (manifest(run, stage) or {}).get("status") != "running":
            if process.poll() is not None:
                pytest.fail(f"{stage} ended (exit {process.returncode}) before it started: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{stage} did not start in time")
            time.sleep(0.02)
        try:
            process.wait(timeout=delay)
            return "finished before the kill"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
            return f"killed after {delay:.1f}s"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# ------------------------------------------------------------------ SIGKILL, then a re-run
@pytest.mark.parametrize("stage, seed", KILLS)
def test_sigkill_at_a_random_point_then_rerun_equals_an_undisturbed_run(world, stage, seed, tmp_path):
    run = world.seeded(tmp_path / "run", UPSTREAM[stage])
    cache = tmp_path / "cache"
    delay = random.Random(f"{stage}:{seed}").uniform(0.02, 1.0) * world.wall(stage)
    what = kill_during(stage, world, run, delay, cache, tmp_path / "killed.log")
    print(f"{stage} seed {seed}: {what}")
    assert_nothing_half_written(run)
    for upstream in UPSTREAM[stage]:  # a killed stage never touches the stages it reads
        assert tree(run / upstream) == tree(world.reference / upstream)

    plant_debris(run, stage)
    done = cli([stage, world.recipe_for(stage), "--run-dir", run], cache, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert manifest(run, stage)["status"] == "complete"
    assert_nothing_half_written(run)
    assert temp_leftovers(run) == []
    SAME[stage](world.reference_for(stage), run)


# ------------------------------------------------------------------ SIGTERM outside the training steps
def children_of(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def start_stage(world: World, stage: str, run: Path, cache: Path, log: Path) -> subprocess.Popen:
    """`adaptctl STAGE` in a process of its own, returned once its manifest says running (and, for
    export, once its verifying child runs)."""
    process = subprocess.Popen([sys.executable, "-m", "adaptctl", stage, str(world.recipe), "--run-dir", str(run)],
                               cwd=PROJECT, env=env(cache), stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + 300
    while (manifest(run, stage) or {}).get("status") != "running" or (stage == "export" and not children_of(process.pid)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{stage} ended or hung before the signal: {log.read_text()[-2000:]}")
        time.sleep(0.02)
    return process


def assert_ended(children: list):
    import psutil

    psutil.wait_procs(children, timeout=10)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE], "a child outlived adaptctl"


@pytest.mark.parametrize("stage", ["prepare", "evaluate", "export"])
def test_sigterm_outside_training_exits_130_interrupted_and_leaves_nothing(world, stage, tmp_path):
    """A batch queue's stop (SIGTERM, to the adaptctl process only) during prepare, evaluate or export
    (the verifying child running): exit 130, the manifest says interrupted, no temp folder, no child left;
    the re-run completes with the outputs of an undisturbed run."""
    run, cache, log = world.seeded(tmp_path / "run", UPSTREAM[stage]), tmp_path / "cache", tmp_path / "term.log"
    process = start_stage(world, stage, run, cache, log)
    children = children_of(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=120) == 130, log.read_text()[-2000:]
    finally:
        process.kill()
    assert manifest(run, stage)["status"] == "interrupted"
    assert "Traceback" not in log.read_text()
    assert temp_leftovers(run) == []
    assert_ended(children)
    done = cli([stage, world.recipe, "--run-dir", run], cache, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    SAME[stage](world.reference, run)


def test_the_verifying_child_ends_when_export_is_killed(world, tmp_path):
    """SIGKILL to adaptctl alone (not its process group): the kernel ends the export's verifying child too."""
    run = world.seeded(tmp_path / "run", UPSTREAM["export"])
    process = start_stage(world, "export", run, tmp_path / "cache", tmp_path / "kill.log")
    children = children_of(process.pid)
    process.kill()
    process.wait(timeout=30)
    assert_ended(children)


def test_a_metrics_log_cut_off_mid_line_is_repaired_on_resume(tmp_path):
    """SIGKILL while appending to train/metrics.jsonl leaves half a line; the resumed run keeps the whole
    rows up to its checkpoint and drops the rest (loss.png and later readers parse every line)."""
    from adaptctl.training.callbacks import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.7}\n{"step": 2, "loss": 0.6}\n{"step": 3, "loss": 0.5}\n{"step": 4, "lo')
    MetricsLog(path, resume_step=2)
    assert path.read_text() == '{"step": 1, "loss": 0.7}\n{"step": 2, "loss": 0.6}\n'
    assert temp_leftovers(tmp_path) == []


# ------------------------------------------------------------------ full and read-only disks
def failing_save(code: int, where: str):
    """safetensors' save_file as transformers calls it, failing like a full/read-only disk for paths under `where`."""
    from transformers import modeling_utils

    real = modeling_utils.safe_save_file

    def save(tensors, filename, *args, **kwargs):
        if where in str(filename):
            raise OSError(code, os.strerror(code), str(filename))
        return real(tensors, filename, *args, **kwargs)

    return save


@pytest.mark.parametrize("code, exit_code, words", [
    (errno.ENOSPC, 3, "no space left on the device while writing"),
    (errno.EACCES, 1, "cannot write"),
])
def test_disk_full_or_read_only_while_saving_a_checkpoint(world, run_cli, tmp_path, monkeypatch, code, exit_code, words):
    from transformers import modeling_utils

    run = world.seeded(tmp_path / "run", ["prepare"])
    monkeypatch.setattr(modeling_utils, "safe_save_file", failing_save(code, "checkpoint-4"))
    status, _, err = run_cli(["train", world.recipe, "--run-dir", run])
    assert status == exit_code, err
    assert "Traceback" not in err
    checkpoints = run / "train" / "checkpoints"
    assert f"{words} {checkpoints}" in err
    assert f"kept: checkpoint {checkpoints / 'checkpoint-2'}, which a re-run resumes from" in err
    assert manifest(run, "train")["status"] == "failed"

    # Space freed: the re-run skips the half-written checkpoint-4 and resumes from checkpoint-2.
    monkeypatch.undo()
    status, _, err = run_cli(["train", world.recipe, "--run-dir", run])
    assert status == 0, err
    assert "checkpoint-4 is incomplete" in err and f"resuming from {checkpoints / 'checkpoint-2'}" in err
    same_train(world.reference, run)
    assert temp_leftovers(run) == []


@pytest.mark.parametrize("code, exit_code, words", [
    (errno.ENOSPC, 3, "no space left on the device while writing"),
    (errno.EROFS, 1, "cannot write"),
])
def test_disk_full_or_read_only_while_exporting_keeps_the_earlier_export(world, run_cli, tmp_path, monkeypatch,
                                                                          code, exit_code, words):
    from transformers import modeling_utils

    run = world.seeded(tmp_path / "run", STAGES)
    before = tree(run / "export" / "model")
    monkeypatch.setattr(modeling_utils, "safe_save_file", failing_save(code, "export"))
    status, _, err = run_cli(["export", world.recipe, "--run-dir", run])
    assert status == exit_code, err
    assert "Traceback" not in err
    assert f"{words} {run / 'export' / 'model'}" in err
    assert "earlier outputs are kept" in err or "choose a writable --run-dir" in err
    assert tree(run / "export" / "model") == before
    assert manifest(run, "export")["status"] == "failed"
    assert temp_leftovers(run) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs: room for the prepared data, not for a checkpoint (weights 4 MiB + optimizer 8 MiB)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("a real full disk needs permission to mount a small tmpfs (root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_really_full_disk_while_training_exits_3_naming_the_path(world, run_cli, small_disk):
    """Not a simulation: torch.save and safetensors fail in their own words on a full disk (a RuntimeError
    without an errno, a SafetensorError); the user still gets exit 3, the path and no traceback."""
    run = world.seeded(small_disk / "run", ["prepare"])
    status, _, err = run_cli(["train", world.recipe, "--run-dir", run])
    assert status == 3, err
    assert "Traceback" not in err
    assert f"no space left on the device while writing {run / 'train' / 'checkpoints'}" in err
    assert "no whole checkpoint yet" in err
    # "failed", or still "running" when not even the manifest fits: either way a re-run resumes
    assert manifest(run, "train")["status"] in ("failed", "running")

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    status, _, err = run_cli(["train", world.recipe, "--run-dir", run])
    assert status == 0, err
    same_train(world.reference, run)


# ------------------------------------------------------------------ failed re-runs keep a completed run
def outputs(run: Path) -> dict:
    return {"train": tree(run / "train" / "model"), "metrics": (run / "evaluate" / "metrics.json").read_bytes(),
            "export": tree(run / "export" / "model"), "recipe": (run / "recipe.yaml").read_bytes(),
            "manifests": {s: (run / s / "manifest.json").read_bytes() for s in STAGES}}


@pytest.mark.parametrize("case", ["data file missing", "broken --set", "model that will not load", "unknown method target"])
def test_a_failed_rerun_keeps_what_a_completed_run_produced(world, run_cli, tmp_path, case):
    run = world.seeded(tmp_path / "run", STAGES)
    before = outputs(run)
    content = yaml.safe_load(world.recipe.read_text())
    content["model"]["base"] = str(world.root / "base")
    command, extra = "run", []
    if case == "data file missing":
        content["data"]["source"] = "moved-away.csv"
    elif case == "broken --set":
        content["data"]["source"] = str(world.root / "data.csv")
        extra = ["--set", "train.learning_rate=-1", "--set", "train.no_such_key=1"]
    elif case == "model that will not load":  # train reads the base model recorded by prepare: refuse it there
        content["data"]["source"] = str(world.root / "data.csv")
        command, extra = "train", ["--set", "train.max_steps=4"]
        shutil.copytree(world.root / "base", tmp_path / "pickled")
        (tmp_path / "pickled" / "model.safetensors").rename(tmp_path / "pickled" / "pytorch_model.bin")
        prepared = json.loads((run / "prepare" / "manifest.json").read_text())
        prepared["model_path"] = str(tmp_path / "pickled")
        (run / "prepare" / "manifest.json").write_text(json.dumps(prepared, indent=2) + "\n")
        before["manifests"]["prepare"] = (run / "prepare" / "manifest.json").read_bytes()
    else:
        content["data"]["source"] = str(world.root / "data.csv")
        command, extra = "train", ["--set", "method.name=lora", "--set", "method.target_modules=[no_such_module]"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(content, sort_keys=False))

    status, _, err = run_cli([command, recipe, "--run-dir", run, *extra])
    assert status == 1, err
    assert "Traceback" not in err
    after = outputs(run)
    assert after["manifests"] == before["manifests"], "a manifest changed"
    assert after == before, "an output of the completed run changed"
    assert all(manifest(run, s)["status"] == "complete" for s in STAGES)
    assert temp_leftovers(run) == []

