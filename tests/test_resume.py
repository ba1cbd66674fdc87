"""Resume and failure handling of the train stage: a run killed (SIGKILL) or stopped (SIGTERM,
Ctrl-C) part-way and run again ends with the weights of an uninterrupted run; a half-written
checkpoint is skipped; a non-finite loss stops the run with exit 3 naming the step; precision
auto picks bf16 where the CPU has it.

A tiny random BERT (hidden 64, dropout on, so that resuming must restore the RNG state) with the
packaged MiniLM tokenizer, on a small three-topic csv; the killed runs are real subprocesses.
"""

from __future__ import annotations

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
import torch
import yaml
from safetensors.torch import load_file, save_file

PROJECT = Path(__file__).resolve().parents[1]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
STEPS = 10
TOPICS = {"sport": "match goal team coach score", "weather": "rain cloud sunny storm wind",
          "food": "bread soup cheese apple dinner"}


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from adaptctl.models.resolve import resolve_model

    folder = tmp_path_factory.mktemp("resume") / "base"
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(MINILM).path))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=96, max_position_embeddings=128, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data(base) -> Path:
    rng = random.Random(0)
    lines = ["text,label"]
    for i in range(120):
        label = list(TOPICS)[i % 3]
        lines.append(" ".join(rng.choices(TOPICS[label].split() + ["the", "a", "today", "very"], k=12)) + f",{label}")
    path = base.parent / "topics.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def recipe(base: Path, data: Path, **train) -> dict:
    return {"name": "tiny-resume", "task": "classification", "seed": 5, "model": {"base": str(base)},
            "data": {"source": str(data), "text": "text", "label": "label", "max_length": 32,
                     "splits": {"validation": 0.1, "test": 0.1}},
            "method": {"name": "full"},
            "train": {"max_steps": STEPS, "batch_size": 8, "learning_rate": 1e-3, "precision": "fp32",
                      "save_every": 2, "logging_steps": 1, **train}}


def write(folder: Path, content: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def prepared(run_cli, folder: Path, content: dict) -> tuple[Path, Path]:
    path, run = write(folder, content), folder / "run"
    code, _, err = run_cli(["prepare", path, "--run-dir", run])
    assert code == 0, err
    return path, run


@pytest.fixture(scope="module")
def reference(base, data, tmp_path_factory) -> dict:
    """The uninterrupted run's final weights."""
    from adaptctl.cli import main

    folder = tmp_path_factory.mktemp("reference")
    path, run = write(folder, recipe(base, data)), folder / "run"
    for stage in ("prepare", "train"):
        assert main([stage, str(path), "--run-dir", str(run)]) == 0
    weights = load_file(run / "train" / "model" / "model.safetensors")
    start = load_file(base / "model.safetensors")
    assert max((weights[k] - start[k]).abs().max().item() for k in weights) > 1e-3, "the reference barely trained"
    return weights


def start_training(path: Path, run: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "adaptctl", "train", str(path), "--run-dir", str(run)], cwd=PROJECT,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), env={**os.environ, "HF_HUB_OFFLINE": "1"})


def wait_for_checkpoint(process: subprocess.Popen, run: Path, timeout: float = 240) -> Path:
    from adaptctl.training.checkpoints import checkpoints, is_whole

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        whole = [c for c in checkpoints(run / "train" / "checkpoints") if is_whole(c)]
        if whole:
            return whole[-1]
        if process.poll() is not None:
            pytest.fail(f"training ended (exit {process.returncode}) before a checkpoint appeared")
        time.sleep(0.02)
    process.kill()
    pytest.fail("no checkpoint within the time limit")


def killed_and_resumed(run_cli, recipe: Path, run: Path, log: Path) -> dict:
    """Prepare, train in a subprocess killed (SIGKILL) at its first whole checkpoint, train again in this
    process: the resumed run's train manifest."""
    code, _, err = run_cli(["prepare", recipe, "--run-dir", run])
    assert code == 0, err
    process = start_training(recipe, run, log)
    wait_for_checkpoint(process, run)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    code, _, err = run_cli(["train", recipe, "--run-dir", run])
    assert code == 0, err
    return json.loads((run / "train" / "manifest.json").read_text())


def assert_same_weights(run: Path, reference: dict):
    weights = load_file(run / "train" / "model" / "model.safetensors")
    assert weights.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(weights[key], value, rtol=0, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")


def logged_steps(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


def manifest(run: Path) -> dict:
    return json.loads((run / "train" / "manifest.json").read_text())


# ------------------------------------------------------------------ resume
def test_a_killed_run_resumes_to_the_uninterrupted_result(base, data, reference, run_cli, tmp_path):
    path, run = prepared(run_cli, tmp_path, recipe(base, data))
    process = start_training(path, run, tmp_path / "killed.log")
    kept = wait_for_checkpoint(process, run)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert manifest(run)["status"] == "running" and not (run / "train" / "model").exists()

    code, _, err = run_cli(["train", path, "--run-dir", run])
    assert code == 0, err
    assert "resuming from" in err
    resumed_from = manifest(run)["resumed_from_step"]
    assert resumed_from >= int(kept.name.split("-")[1]) and resumed_from < STEPS
    assert manifest(run)["status"] == "complete" and manifest(run)["steps"] == STEPS
    assert logged_steps(run) == list(range(1, STEPS + 1)), "metrics.jsonl repeats or misses steps after the resume"
    assert_same_weights(run, reference)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_saves_a_checkpoint_exits_130_and_resumes(sig, base, data, reference, run_cli, tmp_path):
    from adaptctl.training.checkpoints import last_whole

    path, run = prepared(run_cli, tmp_path, recipe(base, data))
    log = tmp_path / "stopped.log"
    process = start_training(path, run, log)
    wait_for_checkpoint(process, run)
    process.send_signal(sig)
    process.wait(timeout=120)
    stderr = log.read_text()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    stopped = manifest(run)
    assert stopped["status"] == "interrupted"
    kept = last_whole(run / "train" / "checkpoints")
    assert kept is not None and str(kept) in stderr, "the message should name the checkpoint it saved"
    assert int(kept.name.split("-")[1]) < STEPS

    code, _, err = run_cli(["train", path, "--run-dir", run])
    assert code == 0, err
    assert f"resuming from {kept}" in err
    assert manifest(run)["status"] == "complete" and manifest(run)["steps"] == STEPS
    assert logged_steps(run) == list(range(1, STEPS + 1))
    assert_same_weights(run, reference)


# ------------------------------------------------------------------ resume equals the undisturbed run
EPOCH_STEPS = 12  # 96 training rows in batches of 8
TIMING_KEYS = ("tokens_per_second", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def two_epochs(content: dict, **train) -> dict:
    """Two epochs with the defaults that matter here: a checkpoint and a validation pass each epoch."""
    content["train"] = {**content["train"], "max_steps": None, "save_every": None, "epochs": 2, **train}
    return content


def signal_during_step(sig: int, step: int):
    """Send `sig` to this process while training runs step `step`, as a Ctrl-C or `kill` would."""
    from transformers import TrainerCallback

    from adaptctl.training.session import TrainingSession

    class Signal(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == step - 1:
                os.kill(os.getpid(), sig)

    build = TrainingSession.build_trainer

    def build_signalled(self, *args, **kwargs):
        trainer, stop = build(self, *args, **kwargs)
        trainer.add_callback(Signal())
        return trainer, stop

    return build_signalled


def metric_rows(run: Path) -> list[dict]:
    """metrics.jsonl without wall-clock figures: what a resumed run must reproduce exactly."""
    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows if not r.get("summary")]


def assert_identical_weights(run: Path, reference: Path):
    weights, expected = (load_file(r / "train" / "model" / "model.safetensors") for r in (run, reference))
    assert weights.keys() == expected.keys()
    differ = {k: (weights[k] - expected[k]).abs().max().item() for k in expected if not torch.equal(weights[k], expected[k])}
    assert not differ, f"resumed weights differ from the undisturbed run's: {differ}"


@pytest.fixture(scope="module")
def undisturbed(base, data, tmp_path_factory):
    """The undisturbed two-epoch run for a length_bucketing setting, trained once per module.
    save_every changes when checkpoints are written, never the weights, so one reference serves both."""
    from adaptctl.core import console
    from adaptctl.cli import main

    runs = {}

    def run(bucketing: bool) -> Path:
        if bucketing not in runs:
            folder = tmp_path_factory.mktemp("undisturbed")
            path, runs[bucketing] = write(folder, two_epochs(recipe(base, data), length_bucketing=bucketing)), folder / "run"
            for stage in ("prepare", "train"):
                assert main([stage, str(path), "--run-dir", str(runs[bucketing]), "--quiet"]) == 0
            console.set_quiet(False)
        return runs[bucketing]

    return run


def stopped(run_cli, folder: Path, content: dict, sig: int, step: int, monkeypatch) -> tuple[Path, Path]:
    """The recipe trained until `sig` arrives during `step` -> (recipe, stopped run)."""
    from adaptctl.training.session import TrainingSession

    path, run = prepared(run_cli, folder, content)
    with monkeypatch.context() as patch:
        patch.setattr(TrainingSession, "build_trainer", signal_during_step(sig, step))
        code, _, err = run_cli(["train", path, "--run-dir", run])
    assert code == 130, err
    assert f"checkpoint saved at {run / 'train' / 'checkpoints' / f'checkpoint-{step}'}" in err
    return path, run


@pytest.mark.parametrize("bucketing,sig", [(True, signal.SIGINT), (False, signal.SIGTERM)],
                         ids=["length-bucketing-SIGINT", "plain-shuffle-SIGTERM"])
def test_a_stop_mid_epoch_resumes_to_the_undisturbed_weights_bit_for_bit(bucketing, sig, base, data, undisturbed, run_cli,
                                                                          tmp_path, monkeypatch):
    """Stopped in the middle of the second epoch (the sampler must replay that epoch's order from the
    checkpoint's position, and dropout must continue from the checkpoint's RNG state), with the default
    checkpoint and validation each epoch: the Trainer's epoch-end evaluation and save after the stop used
    to overwrite the checkpoint's RNG state (max weight difference 4e-3)."""
    step = EPOCH_STEPS + 5
    path, run = stopped(run_cli, tmp_path, two_epochs(recipe(base, data), length_bucketing=bucketing), sig, step, monkeypatch)
    reference = undisturbed(bucketing)
    assert [r["step"] for r in metric_rows(run) if "eval_loss" in r] == [EPOCH_STEPS], "a stop is no epoch end"

    code, _, err = run_cli(["train", path, "--run-dir", run])
    assert code == 0, err
    assert f"resuming from {run / 'train' / 'checkpoints' / f'checkpoint-{step}'}" in err
    assert_identical_weights(run, reference)
    assert metric_rows(run) == metric_rows(reference), "the resumed run's losses differ from the undisturbed run's"


def test_a_run_killed_after_an_epoch_end_checkpoint_resumes_to_the_undisturbed_weights(base, data, undisturbed, run_cli,
                                                                                       tmp_path, monkeypatch):
    """save_every dividing the epoch checkpoints the epoch's last step; that checkpoint is written after the
    epoch's evaluation, which a run resumed from it (starting at the next epoch) never repeats."""
    content = two_epochs(recipe(base, data), save_every=EPOCH_STEPS // 2)
    path, run = stopped(run_cli, tmp_path, content, signal.SIGINT, EPOCH_STEPS + 1, monkeypatch)
    reference = undisturbed(True)
    checkpoints = run / "train" / "checkpoints"
    shutil.rmtree(checkpoints / f"checkpoint-{EPOCH_STEPS + 1}")  # as if killed before the stop could save
    (run / "train" / "manifest.json").write_text(json.dumps({**manifest(run), "status": "running"}))

    code, _, err = run_cli(["train", path, "--run-dir", run])
    assert code == 0, err
    assert f"resuming from {checkpoints / f'checkpoint-{EPOCH_STEPS}'}" in err
    assert_identical_weights(run, reference)
    assert metric_rows(run) == metric_rows(reference), "the epoch's eval_loss row or a loss differs"


def test_half_written_newest_checkpoints_are_skipped(base, data, reference, run_cli, tmp_path):
    """As if the process died while writing checkpoint-8 (its state cut short) after checkpoint-6 lost
    its optimizer: resume from checkpoint-4, and still end with the uninterrupted weights."""
    path, run = prepared(run_cli, tmp_path, recipe(base, data, keep_checkpoints=3))
    code, _, err = run_cli(["train", path, "--run-dir", run])
    assert code == 0, err
    checkpoints = run / "train" / "checkpoints"
    # The last step is not checkpointed: the finished model is saved to model/ instead.
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-4", "checkpoint-6", "checkpoint-8"]
    # The crash: the stage never finished and its newest checkpoints are damaged.
    (run / "train" / "manifest.json").write_text(json.dumps({**manifest(run), "status": "running"}))
    shutil.rmtree(run / "train" / "model")
    state = checkpoints / "checkpoint-8" / "trainer_state.json"
    state.write_text(state.read_text()[:40])
    (checkpoints / "checkpoint-6" / "optimizer.pt").unlink()
    tokens_before = json.loads((checkpoints / "checkpoint-4" / "trainer_state.json").read_text())["num_input_tokens_seen"]

    code, _, err = run_cli(["train", path, "--run-dir", run])
    assert code == 0, err
    assert "checkpoint-8 is incomplete" in err and "checkpoint-6 is incomplete" in err
    assert f"resuming from {checkpoints / 'checkpoint-4'} (step 4)" in err
    assert logged_steps(run) == list(range(1, STEPS + 1))
    assert_same_weights(run, reference)
    # Throughput counts the tokens this attempt trained on, not those before the checkpoint.
    done = manifest(run)
    trained = done["tokens_seen"] - tokens_before
    assert 0 < trained < done["tokens_seen"]
    assert done["tokens_per_second"] * done["train_seconds"] == pytest.approx(trained, rel=0.02)


def test_last_whole_checks_weights_optimizer_and_state_and_the_cut_off_ones_are_removed(tmp_path):
    from adaptctl.training.checkpoints import discard_unfinished, last_whole

    def checkpoint(step: int, state: str | None = None, optimizer: bytes = b"x", weights: bytes = b"x") -> Path:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(state if state is not None else json.dumps({"global_step": step}))
        (folder / "optimizer.pt").write_bytes(optimizer)
        (folder / "model.safetensors").write_bytes(weights)
        return folder

    assert last_whole(tmp_path) is None
    checkpoint(2)
    good = checkpoint(10)  # numeric order, not text order: 10 is newer than 9
    checkpoint(9)
    assert last_whole(tmp_path) == good
    checkpoint(11, state='{"global_st')
    checkpoint(12, optimizer=b"")
    checkpoint(13, weights=b"")
    (tmp_path / "checkpoint-14.tmp").mkdir()  # not a checkpoint name
    assert last_whole(tmp_path) == good

    (tmp_path / "checkpoint-13" / ".tmpWzgWpY").write_bytes(b"x")  # safetensors' temporary file, cut off
    discard_unfinished(tmp_path, good)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-14.tmp", "checkpoint-2",
                                                           "checkpoint-9"]


# ------------------------------------------------------------------ non-finite loss
def test_nan_weights_stop_at_step_1_with_exit_3(base, data, run_cli, tmp_path):
    poisoned = tmp_path / "poisoned"
    shutil.copytree(base, poisoned)
    weights = load_file(poisoned / "model.safetensors")
    weights["classifier.weight"] = torch.full_like(weights["classifier.weight"], float("nan"))
    save_file(weights, poisoned / "model.safetensors", metadata={"format": "pt"})
    content = recipe(poisoned, data)
    path, run = prepared(run_cli, tmp_path, content)
    code, _, err = run_cli(["train", path, "--run-dir", run])
    assert code == 3, err
    assert "non-finite loss" in err and "at step 1" in err
    assert "last good checkpoint: none" in err
    assert "Traceback" not in err
    assert manifest(run)["status"] == "failed" and "non-finite" in manifest(run)["error"]


def test_a_loss_that_turns_nan_names_the_step_and_the_last_good_checkpoint(base, data, run_cli, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    from adaptctl.training.session import TrainingSession

    class Poison(TrainerCallback):
        """Turns the head's weights to NaN after step 3, as a diverging run would."""

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 3:
                with torch.no_grad():
                    model.classifier.weight.fill_(float("nan"))

    build = TrainingSession.build_trainer

    def build_poisoned(self, *args, **kwargs):
        trainer, stop = build(self, *args, **kwargs)
        trainer.add_callback(Poison())
        return trainer, stop

    monkeypatch.setattr(TrainingSession, "build_trainer", build_poisoned)
    path, run = prepared(run_cli, tmp_path, recipe(base, data))
    code, _, err = run_cli(["train", path, "--run-dir", run])
    assert code == 3, err
    assert "non-finite loss (nan) at step 4" in err
    assert f"last good checkpoint: {run / 'train' / 'checkpoints' / 'checkpoint-2'}" in err
    assert manifest(run)["status"] == "failed"


# ------------------------------------------------------------------ precision
def test_precision_auto_is_bf16_where_the_hardware_has_it_else_fp32(monkeypatch):
    from adaptctl.training import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert hardware.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert hardware.resolve_precision("auto") == "fp32"  # fp16 only when asked: it can overflow
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    assert hardware.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    assert hardware.resolve_precision("auto") == "fp32"
    for explicit in ("fp32", "bf16", "fp16"):
        assert hardware.resolve_precision(explicit) == explicit


def test_cpu_bf16_detection_reads_the_cpu_flags():
    from adaptctl.training.hardware import cpu_has_bf16

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_a_run_with_precision_auto_records_what_it_used(base, data, run_cli, tmp_path):
    from adaptctl.training.hardware import resolve_precision

    path, run = prepared(run_cli, tmp_path, recipe(base, data, max_steps=2, precision="auto"))
    code, _, err = run_cli(["train", path, "--run-dir", run])
    assert code == 0, err
    used = resolve_precision("auto")
    assert manifest(run)["precision"] == used and f"precision {used}" in err
    if not torch.cuda.is_available() and "avx512_bf16" in Path("/proc/cpuinfo").read_text():
        assert used == "bf16"  # this project's CI machines: see docs/performance.md
    assert logged_steps(run) == [1, 2]
