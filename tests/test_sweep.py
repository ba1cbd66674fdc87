"""adaptctl sweep: trials over recipe fields with Optuna, on a tiny random BERT classifier (tests/tiny_classifier.py)
so that every trial trains in about a second.  What is asserted can fail: the trials and their values, the rows of
results.csv, best.yaml, no trial run twice across re-runs and workers, pruning, failures, and located errors."""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tiny_classifier import tiny_classifier_recipe

# Every trial: a few steps, validation each step (the pruner's input), a small evaluation.
TRAIN = "train: {max_steps: 4, batch_size: 8, precision: fp32, validate: true, eval_every: 1, logging_steps: 1}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A folder with the tiny model (base/) and data (data.csv), made once for the file."""
    root = tmp_path_factory.mktemp("tiny")
    tiny_classifier_recipe(root)
    return root


def write_recipe(tiny: Path, folder: Path, sweep: str, train: str = TRAIN, extra: str = "") -> Path:
    """A sweep recipe over the tiny model; `sweep` is the body of the sweep section, indented two spaces."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "recipe.yaml"
    recipe.write_text(f"""name: tiny-sweep
task: classification
model: {{base: {tiny / 'base'}}}
data: {{source: {tiny / 'data.csv'}, text: text, label: label, splits: {{validation: 0.2, test: 0.2}}, max_length: 32}}
method: {{name: lora, r: 4, alpha: 8, target_modules: [query, value]}}
{train}
{extra}sweep:
{sweep}""")
    return recipe


def read_results(run: Path) -> list[dict]:
    with open(run / "sweep" / "results.csv") as handle:
        return list(csv.DictReader(handle))


def trial_dirs(run: Path) -> set[str]:
    return {p.name for p in (run / "trials").iterdir() if (p / "recipe.yaml").exists()}


def train_starts(run: Path) -> dict[str, str]:
    """trials/<n> -> when its train stage started: a trial run again would change it."""
    return {d: json.loads((run / "trials" / d / "train" / "manifest.json").read_text())["started_at"] for d in trial_dirs(run)}


# ------------------------------------------------------------------ a grid, its results, a re-run
def test_grid_runs_every_point_once_and_best_yaml_validates(tiny, tmp_path, run_cli):
    recipe = write_recipe(tiny, tmp_path, """  metric: accuracy
  pruner: none
  parameters:
    method.name: [lora, full]
    method.r: [2, 8]
    train.learning_rate: [1.0e-3]
""")
    run = tmp_path / "run"
    code, out, err = run_cli(["sweep", recipe, "--run-dir", run, "--json"])
    assert code == 0, err
    summary = json.loads(out)
    rows = read_results(run)
    # The grid is method.name x method.r: 4 trials; full has no rank, so its two points are one recipe, run once.
    assert len(rows) == 4 and summary["trials"] == {"complete": 4}
    assert {(r["method.name"], r["method.r"]) for r in rows} == {("lora", "2"), ("lora", "8"), ("full", ""), ("full", "")}
    assert sum("same recipe as trial" in r["note"] for r in rows) == 1
    assert len(trial_dirs(run)) == 3
    for row in rows:  # each trial's own recipe holds its values
        resolved = yaml.safe_load((run / row["run_dir"] / "recipe.yaml").read_text())
        assert resolved["method"]["name"] == row["method.name"] and "sweep" not in resolved
        assert resolved["train"]["learning_rate"] == 1.0e-3
        if row["method.name"] == "lora":
            assert resolved["method"]["r"] == int(row["method.r"])
        assert float(row["accuracy"]) >= 0 and int(row["trainable_parameters"]) > 0 and float(row["examples_per_second"]) > 0
    lora = {int(r["method.r"]): int(r["trainable_parameters"]) for r in rows if r["method.name"] == "lora"}
    assert lora[8] > lora[2]  # the rank reached the model
    # best.yaml: the best trial's values, and a recipe that validates
    best = max(rows, key=lambda r: float(r["accuracy"]))
    assert summary["metrics"]["accuracy"] == pytest.approx(float(best["accuracy"]))
    best_recipe = yaml.safe_load((run / "sweep" / "best.yaml").read_text())
    assert best_recipe["method"]["name"] == summary["best"]["params"]["method.name"]
    assert (best_recipe["method"].get("r") == summary["best"]["params"].get("method.r")) or best_recipe["method"]["name"] == "full"
    code, _, err = run_cli(["validate", run / "sweep" / "best.yaml"])
    assert code == 0, err
    report = (run / "sweep" / "report.md").read_text()
    assert "metric_vs_speed.png" in report and (run / "sweep" / "metric_vs_speed.png").stat().st_size > 0
    # The same command again: every trial is finished, none runs again.
    before = train_starts(run)
    code, out, err = run_cli(["sweep", recipe, "--run-dir", run, "--json"])
    assert code == 0, err
    assert train_starts(run) == before and len(read_results(run)) == 4


def test_prepare_is_shared_between_trials(tiny, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("ADAPTCTL_CACHE", str(tmp_path / "cache"))  # a cold cache: the first trial prepares
    recipe = write_recipe(tiny, tmp_path, """  metric: eval_loss
  pruner: none
  parameters:
    train.learning_rate: [1.0e-3, 1.0e-2]
""")
    code, _, err = run_cli(["sweep", recipe, "--run-dir", tmp_path / "run"])
    assert code == 0, err
    hits = [json.loads((tmp_path / "run" / "trials" / n / "prepare" / "manifest.json").read_text())["cache_hit"] for n in "01"]
    assert hits == [False, True]
    assert "prepare: cache hit" in err
    # The same study asked another question (another space): refused at the sweep's line, nothing run.
    recipe = write_recipe(tiny, tmp_path, """  metric: eval_loss
  pruner: none
  parameters:
    train.learning_rate: [1.0e-3, 3.0e-2]
""")
    code, _, err = run_cli(["sweep", recipe, "--run-dir", tmp_path / "run"])
    assert code == 1 and "Traceback" not in err
    assert "recipe.yaml:" in err and "was run for another recipe or search space" in err and "sweep.study_name" in err
    assert len(trial_dirs(tmp_path / "run")) == 2


# ------------------------------------------------------------------ pruning and failures
def test_a_trial_behind_the_median_is_pruned(tiny, tmp_path, run_cli):
    # Trial 0 barely moves (lr 1e-9); trial 1's full fine-tune at lr 1 throws its validation loss far above trial
    # 0's at the same step. The metric is maximised: the pruner must see the loss negated to prune trial 1.
    recipe = write_recipe(tiny, tmp_path, """  metric: accuracy
  pruner_startup_trials: 1
  seed: 1
  parameters:
    train.learning_rate: [1.0e-9, 1.0]
""", extra="")
    text = recipe.read_text().replace("method: {name: lora, r: 4, alpha: 8, target_modules: [query, value]}", "method: {name: full}")
    recipe.write_text(text)
    code, out, err = run_cli(["sweep", recipe, "--run-dir", tmp_path / "run", "--json"])
    assert code == 0, err
    # Optuna's GridSampler visits the grid in an order shuffled by its seed: seed 1 takes 1e-9 first.
    rows = read_results(tmp_path / "run")
    assert [(r["train.learning_rate"], r["state"]) for r in rows] == [("1e-09", "complete"), ("1.0", "pruned")]
    assert json.loads(out)["trials"] == {"complete": 1, "pruned": 1}


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(tiny, tmp_path, run_cli, monkeypatch):
    # The failing value holds a secret (a token pasted into a path): redacted in the table, the results, the
    # report, the log and Optuna's own storage (parameters, distributions, the error), yet the trial runs it.
    secret = "hf_Sweep5ecretValue"
    monkeypatch.setenv("HF_TOKEN", secret)
    recipe = write_recipe(tiny, tmp_path, f"""  metric: accuracy
  pruner: none
  parameters:
    model.base: [{tmp_path / ('no-such-model-' + secret)}, {tiny / 'base'}]
""")
    code, out, err = run_cli(["sweep", recipe, "--run-dir", tmp_path / "run", "--json"])
    assert code == 0, err
    rows = {Path(r["model.base"]).name: r for r in read_results(tmp_path / "run")}
    assert {name: r["state"] for name, r in rows.items()} == {"no-such-model-[HF_TOKEN redacted]": "fail", "base": "complete"}
    assert "no-such-model-[HF_TOKEN redacted]" in rows["no-such-model-[HF_TOKEN redacted]"]["note"]
    assert json.loads(out)["best"]["trial"] == int(rows["base"]["trial"])
    leaked = [p.name for p in (tmp_path / "run").rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == [] and secret not in out + err


# ------------------------------------------------------------------ interrupted, then resumed
def test_an_interrupted_trial_resumes_from_its_checkpoint(tiny, tmp_path, run_cli, monkeypatch):
    from transformers import TrainerCallback

    from adaptctl.sweep import trial as trials

    class StopAtStep2(TrainerCallback):  # Ctrl-C in the middle of trial 1's training
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    pruning = trials._pruning
    monkeypatch.setattr(trials, "_pruning", lambda trial, space: pruning(trial, space) + ((StopAtStep2(),) if trial.number == 1 else ()))
    recipe = write_recipe(tiny, tmp_path, """  metric: eval_loss
  pruner: none
  parameters:
    train.learning_rate: [1.0e-3, 2.0e-3, 3.0e-3]
""", train=TRAIN.replace("validate: true", "validate: true, save_every: 1"))
    run = tmp_path / "run"
    code, _, err = run_cli(["sweep", recipe, "--run-dir", run])
    assert code == 130, err
    assert json.loads((run / "trials" / "1" / "train" / "manifest.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(trials, "_pruning", pruning)
    before = train_starts(run)["0"]
    code, _, err = run_cli(["sweep", recipe, "--run-dir", run])
    assert code == 0, err
    rows = read_results(run)
    assert [(r["trial"], r["state"], r["run_dir"]) for r in rows] == [
        ("0", "complete", "trials/0"), ("1", "interrupted", "trials/1"), ("2", "complete", "trials/1"), ("3", "complete", "trials/3")]
    assert trial_dirs(run) == {"0", "1", "3"} and train_starts(run)["0"] == before  # trial 0 was not run again
    assert len({r["train.learning_rate"] for r in rows}) == 3
    train = json.loads((run / "trials" / "1" / "train" / "manifest.json").read_text())
    # The stop asked for at step 2 is honoured at the end of the next step (GracefulStop runs before this callback).
    assert train["status"] == "complete" and 2 <= train["resumed_from_step"] < 4


def test_a_killed_workers_trial_is_run_again(tiny, tmp_path, run_cli):
    """A trial left RUNNING by a process that no longer exists (kill -9) is failed, marked, and run again."""
    import optuna

    recipe = write_recipe(tiny, tmp_path, """  metric: eval_loss
  pruner: none
  parameters:
    train.learning_rate: [1.0e-3, 2.0e-3]
""")
    from adaptctl.core.rundir import RunDir

    run = tmp_path / "run"
    RunDir(run).claim()
    (run / "sweep").mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    grid = optuna.samplers.GridSampler({"train.learning_rate": [1.0e-3, 2.0e-3]}, seed=42)  # as the sweep's own
    study = optuna.create_study(storage=f"sqlite:///{run / 'sweep' / 'study.db'}", study_name="tiny-sweep",
                                direction="minimize", sampler=grid)
    trial = study.ask()
    trial.suggest_categorical("train.learning_rate", [1.0e-3, 2.0e-3])
    import socket

    for key, value in {"host": socket.gethostname(), "pid": int(dead), "run_dir": "trials/0"}.items():
        trial.set_user_attr(key, value)
    code, _, err = run_cli(["sweep", recipe, "--run-dir", run])
    assert code == 0, err
    rows = read_results(run)
    assert [r["state"] for r in rows] == ["interrupted", "complete", "complete"]
    assert rows[1]["run_dir"] == "trials/0" and {r["train.learning_rate"] for r in rows[1:]} == {"0.001", "0.002"}


# ------------------------------------------------------------------ workers
def test_two_workers_share_one_study_a_stop_reaches_both_and_the_sweep_resumes(tiny, tmp_path, run_cli_subprocess):
    """issue 32.4: SIGTERM to `sweep --workers 2` left the worker running every remaining trial. Now both stop
    (exit 130, no trial starts after), and the same command finishes the grid, each point once."""
    import optuna
    from optuna.trial import TrialState

    recipe = write_recipe(tiny, tmp_path, """  metric: eval_loss
  pruner: none
  parameters:
    train.learning_rate: [1.0e-4, 1.0e-3, 1.0e-2]
    method.r: [2, 4]
""", train=TRAIN.replace("max_steps: 4", "max_steps: 24"))
    run = tmp_path / "run"
    command = ["sweep", recipe, "--run-dir", run, "--workers", "2", "--threads", "1"]
    main = subprocess.Popen([sys.executable, "-m", "adaptctl", *map(str, command)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{run / 'sweep' / 'study.db'}"

    def trial_pids() -> tuple[set, set]:
        """The pids of every process that took a trial, and of those in one now."""
        if not (run / "sweep" / "study.json").exists():  # written once the sweep made the storage's tables
            return set(), set()
        try:
            trials = optuna.load_study(study_name="tiny-sweep", storage=storage).get_trials()
        except Exception:  # the study not made yet, the database busy  # noqa: BLE001
            return set(), set()
        return ({t.user_attrs.get("pid") for t in trials},
                {t.user_attrs.get("pid") for t in trials if t.state == TrialState.RUNNING})

    def both_took_one_and_the_worker_is_in_one() -> bool:
        took, running = trial_pids()
        return len(took - {None}) == 2 and bool(running - {main.pid, None})

    deadline = time.monotonic() + 240  # on a loaded machine the main process may start its first trial late
    while not both_took_one_and_the_worker_is_in_one():
        assert main.poll() is None and time.monotonic() < deadline, main.stderr.read() if main.poll() is not None else "slow"
        time.sleep(0.2)
    main.send_signal(signal.SIGTERM)
    _, err = main.communicate(timeout=240)
    assert main.returncode == 130, err
    study = optuna.load_study(study_name="tiny-sweep", storage=storage)
    pids = {t.user_attrs["pid"] for t in study.trials}
    assert len(pids) == 2 and not any(_alive(pid) for pid in pids)  # the worker stopped with the sweep
    # The worker's trial may have ended just before the stop reached it (a trial is a second or two): then it
    # stopped between trials.  Either way nothing is left running and the grid was cut short.
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) < 6, [(t.number, t.state.name) for t in study.trials]

    done = run_cli_subprocess(command, timeout=300)
    assert done.returncode == 0, done.stderr
    complete = [r for r in read_results(run) if r["state"] == "complete"]
    points = [(r["train.learning_rate"], r["method.r"]) for r in complete]
    assert sorted(points) == sorted(itertools.product(["0.0001", "0.001", "0.01"], ["2", "4"]))  # each once
    assert len(trial_dirs(run)) == 6


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"


# ------------------------------------------------------------------ bad input: located, exit 1, before any trial
BAD = {
    "unknown field": ("    train.learnig_rate: [1.0e-3]\n", "did you mean 'learning_rate'?", "recipe.yaml:10:"),
    "value out of range": ("    train.warmup_ratio: [0.1, 1.5]\n", "train.warmup_ratio", "recipe.yaml:10:31"),
    "wrong type": ("    method.r: [4, many]\n", "method.r", "recipe.yaml:10:"),
    "empty space": (None, "the search space is empty", "recipe.yaml:9:3"),
    "grid over a range": ("    train.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}\n", "a grid needs the values", "recipe.yaml:11:5"),
    "unsweepable": ("    name: [a, b]\n", "name cannot be swept", "recipe.yaml:10:"),
    # counted, not listed: these grids would take hours and all memory to build before their size was seen
    "a grid with a tiny step": ("    train.learning_rate: {low: 0.0, high: 1.0, step: 1.0e-12}\n",
                                "a grid of 1,000,000,000,001 points", "recipe.yaml:9:3"),
    "a grid over huge integers": ("    train.max_steps: {low: 1, high: 1000000000000000000, step: 1}\n",
                                  "a grid of 1,000,000,000,000,000,000 points", "recipe.yaml:9:3"),
    "an endless range": ("    train.learning_rate: {low: 0.0, high: .inf, step: 0.1}\n", "should be a finite number",
                         "recipe.yaml:10:"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_sweep_input_is_located_and_exits_1(tiny, tmp_path, run_cli, case):
    parameter, words, where = BAD[case]
    sampler = "  sampler: grid\n" if case == "grid over a range" else ""
    body = f"  metric: accuracy\n{sampler}  parameters:\n{parameter}" if parameter else "  metric: accuracy\n  parameters: {}\n"
    recipe = write_recipe(tiny, tmp_path, body)
    for command in (["validate", recipe], ["sweep", recipe, "--run-dir", tmp_path / "run"]):  # the same checks
        code, _, err = run_cli(command)
        assert code == 1 and words in err and where in err and "Traceback" not in err, err
    assert not (tmp_path / "run" / "trials").exists()


def test_a_metric_the_task_does_not_report_is_located(tiny, tmp_path, run_cli):
    recipe = write_recipe(tiny, tmp_path, "  metric: rougeL\n  parameters:\n    train.learning_rate: [1.0e-3]\n")
    code, _, err = run_cli(["sweep", recipe, "--run-dir", tmp_path / "run"])
    assert code == 1 and "sweep.metric: task classification does not report rougeL" in err and "recipe.yaml:8:3" in err, err


@pytest.mark.parametrize("url", ["postgresql://nobody@127.0.0.1:1/sweeps", "sqlite:////proc/no/such/folder/study.db"])
def test_a_storage_that_cannot_be_reached_exits_1(tiny, tmp_path, run_cli, url):
    recipe = write_recipe(tiny, tmp_path, f"  metric: accuracy\n  storage: {url}\n  parameters:\n    train.learning_rate: [1.0e-3]\n")
    code, _, err = run_cli(["sweep", recipe, "--run-dir", tmp_path / "run"])
    assert code == 1 and "sweep.storage: cannot open the study storage" in err and "Traceback" not in err, err
    assert not (tmp_path / "run" / "trials").exists()


# ------------------------------------------------------------------ one study per directory, on the content it ran
def test_a_run_directory_holds_one_study_run_on_the_content_it_was_run_with(tiny, tmp_path, run_cli):
    """issue 32.1 and 32.3: a second study in the same directory (another sweep.study_name or storage) would
    start again at trials/0 over the first's models, results.csv and best.yaml; a study resumed after its data
    file or its model folder changed in place would rank old and new trials together.  Both are refused."""
    from safetensors.torch import load_file, save_file

    own = tmp_path / "copy"
    shutil.copytree(tiny, own)
    recipe = write_recipe(own, tmp_path, "  metric: eval_loss\n  pruner: none\n  parameters:\n    train.learning_rate: [1.0e-3]\n")
    run = tmp_path / "run"
    code, _, err = run_cli(["sweep", recipe, "--run-dir", run])
    assert code == 0, err
    before = (train_starts(run), (run / "sweep" / "results.csv").read_bytes())
    for setting, words in (("sweep.study_name=another", "holds the trials of study tiny-sweep"),
                           (f"sweep.storage=sqlite:///{tmp_path / 'other.db'}", "holds the trials of study tiny-sweep")):
        code, _, err = run_cli(["sweep", recipe, "--run-dir", run, "--set", setting])
        assert code == 1 and words in err and "its own --run-dir" in err and "Traceback" not in err, err
    data, weights = own / "data.csv", own / "base" / "model.safetensors"
    kept = {data: data.read_bytes(), weights: weights.read_bytes()}
    data.write_text(data.read_text() + "great lovely happy item 99,pos\n")
    code, _, err = run_cli(["sweep", recipe, "--run-dir", run])
    assert code == 1 and "the content of data.source changed" in err and "another --run-dir" in err, err
    data.write_bytes(kept[data])
    tensors = load_file(weights)
    save_file({k: v * 2 if v.is_floating_point() else v for k, v in tensors.items()}, weights, metadata={"format": "pt"})
    code, _, err = run_cli(["sweep", recipe, "--run-dir", run])
    assert code == 1 and "the content of model.base changed" in err, err
    weights.write_bytes(kept[weights])
    code, _, err = run_cli(["sweep", recipe, "--run-dir", run])  # the content it ran on: resumed, nothing re-run
    assert code == 0, err
    assert (train_starts(run), (run / "sweep" / "results.csv").read_bytes()) == before


def test_a_full_disk_stops_the_sweep_with_exit_3_and_the_same_command_resumes(tiny, tmp_path, run_cli, monkeypatch):
    """issue 32.5: a full disk under a trial, then under the study's SQLite storage, was Optuna's AssertionError
    and StorageInternalError; now exit 3 naming what could not be written, and the sweep resumes."""
    import errno
    import sqlite3

    import sqlalchemy.exc
    from sqlalchemy.orm import Session

    recipe = write_recipe(tiny, tmp_path, "  metric: eval_loss\n  pruner: none\n  parameters:\n"
                                          "    train.learning_rate: [1.0e-3, 2.0e-3]\n")
    run = tmp_path / "run"
    real = Path.write_text

    def full_under_the_trial(self, *args, **kwargs):  # every text file of trial 0 (its marker, manifests, recipe)
        if f"trials{os.sep}0{os.sep}" in str(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_under_the_trial)
    code, _, err = run_cli(["sweep", recipe, "--run-dir", run])
    assert code == 3 and f"no space left on the device while writing {run / 'trials' / '0'}" in err, err
    assert "Traceback" not in err and not (run / "trials" / "1").exists()  # stopped, not on to the next trial
    monkeypatch.undo()

    def disk_full(self):
        raise sqlalchemy.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(Session, "commit", disk_full)
    code, _, err = run_cli(["sweep", recipe, "--run-dir", run])
    assert code == 3 and f"no space left on the device while writing {run / 'sweep' / 'study.db'}" in err, err
    assert "Traceback" not in err
    monkeypatch.undo()
    code, _, err = run_cli(["sweep", recipe, "--run-dir", run])
    assert code == 0, err
    rows = read_results(run)
    assert [(r["state"], r["run_dir"]) for r in rows] == [("interrupted", "trials/0"), ("complete", "trials/0"),
                                                          ("complete", "trials/2")]


def test_a_range_value_maps_back_to_itself():
    """best.yaml maps each winning parameter back through value_of: a stepless range (tpe, random) has no grid
    to look the value up in, and used to fail there with a TypeError."""
    from adaptctl.recipe.schema import SweepRange
    from adaptctl.sweep.space import Parameter

    stepless = Parameter("train.learning_rate", None, SweepRange(low=1e-5, high=1e-3, log=True))
    stepped = Parameter("train.epochs", None, SweepRange(low=1, high=3, step=1))
    assert stepless.value_of(3.2e-4) == 3.2e-4
    assert stepped.value_of(2) == 2
    chosen = Parameter("model.base", ("a", "b"), None)
    assert chosen.value_of("b") == "b"
