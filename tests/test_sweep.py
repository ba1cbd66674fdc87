"""adaptctl sweep: trials over recipe fields with Optuna, on a tiny random BERT classifier (tests/tiny_classifier.py)
so that every trial trains in about a second.  What is asserted can fail: the trials and their values, the rows of
results.csv, best.yaml, no trial run twice across re-runs and workers, pruning, failures, and located errors."""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import subprocess
import sys
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


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(tiny, tmp_path, run_cli):
    recipe = write_recipe(tiny, tmp_path, f"""  metric: accuracy
  pruner: none
  parameters:
    model.base: [{tmp_path / 'no-such-model'}, {tiny / 'base'}]
""")
    code, out, err = run_cli(["sweep", recipe, "--run-dir", tmp_path / "run", "--json"])
    assert code == 0, err
    rows = {Path(r["model.base"]).name: r for r in read_results(tmp_path / "run")}
    assert {name: r["state"] for name, r in rows.items()} == {"no-such-model": "fail", "base": "complete"}
    assert "no-such-model" in rows["no-such-model"]["note"]
    assert json.loads(out)["best"]["trial"] == int(rows["base"]["trial"])


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
    from adaptctl.rundir import RunDir

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
def test_two_workers_share_one_study_without_repeating_a_trial(tiny, tmp_path, run_cli_subprocess):
    import optuna

    recipe = write_recipe(tiny, tmp_path, """  metric: eval_loss
  pruner: none
  parameters:
    train.learning_rate: [1.0e-4, 1.0e-3, 1.0e-2]
    method.r: [2, 4]
""", train=TRAIN.replace("max_steps: 4", "max_steps: 24"))
    run = tmp_path / "run"
    done = run_cli_subprocess(["sweep", recipe, "--run-dir", run, "--workers", "2", "--threads", "1"], timeout=300)
    assert done.returncode == 0, done.stderr
    rows = read_results(run)
    points = {(r["train.learning_rate"], r["method.r"]) for r in rows}
    assert len(rows) == 6 and points == {(lr, r) for lr, r in itertools.product(["0.0001", "0.001", "0.01"], ["2", "4"])}
    assert len(trial_dirs(run)) == 6
    study = optuna.load_study(study_name="tiny-sweep", storage=f"sqlite:///{run / 'sweep' / 'study.db'}")
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2  # both processes took trials


# ------------------------------------------------------------------ bad input: located, exit 1, before any trial
BAD = {
    "unknown field": ("    train.learnig_rate: [1.0e-3]\n", "did you mean 'learning_rate'?", "recipe.yaml:10:"),
    "value out of range": ("    train.warmup_ratio: [0.1, 1.5]\n", "train.warmup_ratio", "recipe.yaml:10:31"),
    "wrong type": ("    method.r: [4, many]\n", "method.r", "recipe.yaml:10:"),
    "empty space": (None, "the search space is empty", "recipe.yaml:9:3"),
    "grid over a range": ("    train.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}\n", "a grid needs the values", "recipe.yaml:11:5"),
    "unsweepable": ("    name: [a, b]\n", "name cannot be swept", "recipe.yaml:10:"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_sweep_input_is_located_and_exits_1(tiny, tmp_path, run_cli, case):
    parameter, words, where = BAD[case]
    sampler = "  sampler: grid\n" if case == "grid over a range" else ""
    body = f"  metric: accuracy\n{sampler}  parameters:\n{parameter}" if parameter else "  metric: accuracy\n  parameters: {}\n"
    recipe = write_recipe(tiny, tmp_path, body)
    code, _, err = run_cli(["sweep", recipe, "--run-dir", tmp_path / "run"])
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
