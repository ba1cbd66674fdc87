"""The command line: exit codes, --json, --set, schema, init, runs, and a start-up without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from adaptctl.recipe.schema import TASKS
from adaptctl.core.rundir import RunDir, atomic_write_json
from adaptctl.recipe.starter import starter_document

PROJECT = Path(__file__).resolve().parents[1]
QUICKSTART = PROJECT / "recipes" / "quickstart.yaml"

RECIPE = """\
name: cli-test
task: classification
model: {base: sentence-transformers/all-MiniLM-L6-v2}
data: {source: data.csv, text: text, label: label}
method: {name: lora, r: 8}
train: {epochs: 1}
"""


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    (tmp_path / "data.csv").write_text("text,label\nhello,a\n")  # validate reads its columns
    return path


def no_traceback(err: str):
    assert "Traceback" not in err, err


# ---------------------------------------------------------------- validate
def test_validate_ok(run_cli):
    code, out, err = run_cli(["validate", QUICKSTART])
    assert code == 0
    assert out == ""  # stdout stays free for --json
    assert "ok:" in err and "quickstart-tickets" in err


def test_validate_json_prints_one_object(run_cli, recipe):
    code, out, err = run_cli(["validate", recipe, "--json", "--set", "train.epochs=2"])
    assert code == 0
    assert len(out.strip().splitlines()) == 1
    payload = json.loads(out)
    assert payload["valid"] is True and payload["name"] == "cli-test" and payload["method"] == "lora"
    assert payload["recipe"]["train"]["epochs"] == 2


def test_validate_reports_problems_with_exit_1(run_cli, recipe):
    recipe.write_text(RECIPE.replace("epochs: 1", "epoch: 1").replace("name: lora", "name: lroa"))
    code, out, err = run_cli(["validate", recipe])
    assert code == 1 and out == ""
    assert f"{recipe}:6:9: train.epoch: unknown key 'epoch'" in err
    assert "did you mean 'epochs'?" in err and "did you mean 'lora'?" in err
    no_traceback(err)


@pytest.mark.parametrize("args, code, words", [
    (["validate", "{recipe}", "--set", "train.epochs=abc"], 1, "train.epochs"),
    (["evaluate", "{recipe}", "--run-dir", "{tmp}/run"], 1, "evaluate needs the train stage"),
    (["train", "{tmp}/missing.yaml"], 1, "missing.yaml"),
    (["run", "{recipe}", "--stages", "nope"], 1, "unknown stage nope"),
    (["validate", "{recipe}", "--bogus"], 2, "--bogus"),
])
def test_json_prints_one_object_on_every_failure(run_cli, recipe, tmp_path, args, code, words):
    args = [a.format(recipe=recipe, tmp=tmp_path) for a in args] + ["--json"]
    exit_code, out, err = run_cli(args)
    assert exit_code == code, err
    payload = json.loads(out)  # one object, nothing else on stdout
    assert payload["status"] == "failed" and payload["exit_code"] == code and words in payload["error"]
    assert set(payload) == {"status", "error", "hint", "exit_code"}
    no_traceback(err)


def test_set_type_error_names_the_override(run_cli, recipe):
    code, _, err = run_cli(["validate", recipe, "--set", "train.epochs=abc"])
    assert code == 1
    assert "--set train.epochs: train.epochs:" in err


def test_set_unknown_key_suggests(run_cli, recipe):
    code, _, err = run_cli(["validate", recipe, "--set", "train.epoch=3"])
    assert code == 1
    assert "--set train.epoch" in err and "did you mean 'epochs'?" in err


def test_set_list_value(run_cli, recipe):
    code, out, _ = run_cli(["validate", recipe, "--json", "--set", "method.target_modules=[query,value]"])
    assert code == 0
    assert json.loads(out)["recipe"]["method"]["target_modules"] == ["query", "value"]


# --------------------------------------------------------------- exit codes
def test_unknown_command_is_usage_error(run_cli):
    code, _, err = run_cli(["bogus"])
    assert code == 2 and "No such command" in err


def test_missing_argument_is_usage_error(run_cli):
    code, _, err = run_cli(["validate"])
    assert code == 2 and "Missing argument" in err


def test_unknown_option_is_usage_error(run_cli, recipe):
    code, _, _ = run_cli(["validate", recipe, "--nope"])
    assert code == 2


def test_help_exits_0(run_cli):
    code, out, _ = run_cli(["--help"])
    assert code == 0 and "validate" in out and "runs" in out


def test_missing_recipe_file_subprocess(run_cli_subprocess, tmp_path):
    result = run_cli_subprocess(["validate", tmp_path / "missing.yaml"])
    assert result.returncode == 1
    assert "recipe file not found" in result.stderr and "missing.yaml" in result.stderr
    no_traceback(result.stderr)


@pytest.mark.parametrize("command", ["prepare", "train", "evaluate", "export", "run"])
def test_stage_commands_with_a_missing_recipe_exit_1(run_cli, tmp_path, command):
    code, _, err = run_cli([command, tmp_path / "missing.yaml", "--run-dir", tmp_path / "run"])
    assert code == 1 and "recipe file not found" in err
    no_traceback(err)
    assert not (tmp_path / "run").exists()  # nothing is written before the inputs are valid


def test_invalid_recipe_subprocess_has_no_traceback(run_cli_subprocess, recipe):
    recipe.write_text(RECIPE.replace("epochs: 1", "epochs: -1"))
    result = run_cli_subprocess(["train", recipe, "--run-dir", recipe.parent / "run"])
    assert result.returncode == 1
    assert f"{recipe}:6:" in result.stderr and "train.epochs" in result.stderr
    no_traceback(result.stderr)


def test_debug_shows_the_traceback(run_cli_subprocess, tmp_path):
    result = run_cli_subprocess(["--debug", "validate", tmp_path / "missing.yaml"])
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_run_with_unknown_stage(run_cli, recipe, tmp_path):
    code, _, err = run_cli(["run", recipe, "--stages", "prepare,trian", "--run-dir", tmp_path / "run"])
    assert code == 1 and "unknown stage trian" in err


def test_locked_run_directory_is_refused(run_cli, recipe, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom adaptctl.core.rundir import RunDir\n"
         "with RunDir(sys.argv[1]).lock():\n    print('locked', flush=True)\n    time.sleep(120)\n", str(tmp_path / "run")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert code == 1
    assert str(tmp_path / "run" / ".lock") in err and f"pid {holder.pid}" in err
    no_traceback(err)


# ------------------------------------------------------------ schema, init
def test_schema_prints_json_schema(run_cli):
    code, out, _ = run_cli(["schema"])
    assert code == 0
    schema = json.loads(out)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["properties"]["name"]["description"]
    assert schema["$defs"]["Train"]["properties"]["learning_rate"]["description"]


@pytest.mark.parametrize("task", TASKS)
def test_init_prints_a_recipe_that_validates(run_cli, tmp_path, task):
    code, out, _ = run_cli(["init", "--task", task])
    assert code == 0
    assert out.startswith("# adaptctl recipe for")
    assert sum("  # " in line for line in out.splitlines()) >= 10  # commented from the fields' help
    path = tmp_path / "recipe.yaml"
    path.write_text(out)
    # validate reads the columns the starter's templates name: a row with every one of them, in every file
    # the starter names (a CoNLL file: a word and its tag)
    row = {"text": "t", "label": "a", "dialogue": "d", "summary": "s", "document": "d", "question": "q",
           "context": "c", "answers": "a", "chosen": "yes", "rejected": "no", "answer": "4"}
    data = starter_document(task)["data"]
    for name in ("source", "validation", "test"):
        if not isinstance(data.get(name), str):
            continue
        source = tmp_path / data[name]
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(",".join(row) + "\n" + ",".join(row.values()) + "\n" if source.suffix == ".csv"
                          else "Paris\tB-location\nrocks\tO\n" if source.suffix == ".conll"
                          else json.dumps(row) + "\n")
    code, out, err = run_cli(["validate", path, "--json"])
    assert code == 0, err
    assert json.loads(out)["task"] == task


def test_init_unknown_task_suggests(run_cli):
    code, out, err = run_cli(["init", "--task", "causal_lm"])
    assert code == 1 and out == ""
    assert "unknown task 'causal_lm'" in err and "did you mean 'causal-lm'?" in err


# --------------------------------------------------------------- start-up
def test_cli_start_up_does_not_import_torch():
    code = textwrap.dedent("""
        import sys
        import adaptctl.cli, adaptctl.recipe.loader, adaptctl.pipeline, adaptctl.core.rundir, adaptctl.run.runs, adaptctl.recipe.starter
        heavy = sorted(m for m in ("torch", "transformers", "datasets", "peft", "accelerate", "fastapi", "uvicorn")
                       if m in sys.modules)
        print(",".join(heavy))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported at start-up: {result.stdout.strip()}"


def test_validate_command_does_not_import_torch(tmp_path):
    # the whole validate path, not only the imports
    code = textwrap.dedent(f"""
        import sys
        from adaptctl.cli import main
        assert main(["validate", {str(QUICKSTART)!r}, "--json"]) == 0
        assert main(["init", "--task", "causal-lm"]) == 0
        assert main(["schema"]) == 0
        print("HEAVY=" + ",".join(m for m in ("torch", "transformers") if m in sys.modules), file=sys.stderr)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stderr or result.stderr.rstrip().endswith("HEAVY=")


# -------------------------------------------------------------------- runs
def make_run(root: Path, name: str, metrics: dict | None, stages=("prepare", "train", "evaluate")) -> Path:
    run = RunDir(root / name)
    run.root.mkdir(parents=True)
    (run.root / "recipe.yaml").write_text(yaml.safe_dump({"name": name}))
    for stage in stages:
        run.write_manifest(stage, status="complete", started_at="2025-01-01T00:00:00+00:00",
                           finished_at="2025-01-01T00:01:00+00:00", wall_seconds=60.0,
                           metrics=(metrics or {}) if stage == "evaluate" else {"train_loss": 0.25})
    if metrics is not None:
        atomic_write_json(run.root / "evaluate" / "metrics.json",
                          {"task": "classification", "split": "test", "num_examples": 10, "metrics": metrics})
    return run.root


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    make_run(root, "alpha", {"accuracy": 0.9125, "f1": 0.875})
    make_run(root, "beta", {"accuracy": 0.5, "f1": 0.25})
    make_run(root, "gamma", None, stages=("prepare",))
    RunDir(root / "gamma").write_manifest("train", status="failed", error="diverged")
    (root / "not-a-run").mkdir()
    return root


def test_runs_list(run_cli, runs):
    code, out, _ = run_cli(["runs", "list", runs])
    assert code == 0
    for name in ("alpha", "beta", "gamma"):
        assert name in out
    assert "not-a-run" not in out
    assert "accuracy=0.9125" in out and "train:failed" in out and "evaluate:complete" in out


def test_runs_list_json(run_cli, runs):
    code, out, _ = run_cli(["runs", "list", runs, "--json"])
    assert code == 0
    listed = {Path(r["run_dir"]).name: r for r in json.loads(out)["runs"]}
    assert set(listed) == {"alpha", "beta", "gamma"}
    assert listed["alpha"]["metrics"]["accuracy"] == 0.9125
    assert listed["gamma"]["stages"] == {"prepare": "complete", "train": "failed"}


def test_runs_list_missing_folder(run_cli, tmp_path):
    code, _, err = run_cli(["runs", "list", tmp_path / "nowhere"])
    assert code == 1 and "no runs folder" in err


def test_runs_show(run_cli, runs):
    code, out, _ = run_cli(["runs", "show", runs / "alpha"])
    assert code == 0
    for word in ("prepare", "train", "evaluate", "complete", "accuracy=0.9125", "train_loss=0.25"):
        assert word in out
    code, out, _ = run_cli(["runs", "show", runs / "alpha", "--json"])
    payload = json.loads(out)
    assert set(payload["stages"]) == {"prepare", "train", "evaluate"}
    assert payload["evaluate"]["metrics"]["f1"] == 0.875


def test_runs_show_not_a_run(run_cli, runs):
    code, _, err = run_cli(["runs", "show", runs / "not-a-run"])
    assert code == 1 and "not a run directory" in err


def test_runs_compare(run_cli, runs):
    code, out, _ = run_cli(["runs", "compare", runs / "alpha", runs / "beta"])
    assert code == 0
    assert "0.9125" in out and "0.2500" in out and "accuracy" in out
    code, out, _ = run_cli(["runs", "compare", runs / "alpha", runs / "beta", "--json"])
    assert json.loads(out) == {str(runs / "alpha"): {"accuracy": 0.9125, "f1": 0.875},
                               str(runs / "beta"): {"accuracy": 0.5, "f1": 0.25}}


def test_runs_compare_shows_task_split_examples_and_the_recipe_diff(run_cli, runs):
    (runs / "beta" / "recipe.yaml").write_text(yaml.safe_dump({"name": "beta", "method": {"name": "lora", "r": 4}}))
    code, out, _ = run_cli(["runs", "compare", runs / "alpha", runs / "beta", "--diff"])
    assert code == 0
    assert "classification" in out and "test" in out and "10" in out
    assert "method.r" in out and "recipes: the fields that differ" in out
    code, out, _ = run_cli(["runs", "compare", runs / "alpha", runs / "beta", "--diff", "--json"])
    diff = json.loads(out)["recipe_diff"]
    assert diff["name"] == {str(runs / "alpha"): "alpha", str(runs / "beta"): "beta"}
    assert diff["method.r"] == {str(runs / "alpha"): None, str(runs / "beta"): 4}


def test_runs_compare_warns_when_tasks_differ(run_cli, runs):
    metrics = runs / "beta" / "evaluate" / "metrics.json"
    metrics.write_text(metrics.read_text().replace("classification", "causal-lm"))
    code, _, err = run_cli(["runs", "compare", runs / "alpha", runs / "beta"])
    assert code == 0 and "different tasks (causal-lm, classification)" in err


def test_runs_compare_missing_metrics_exit_1(run_cli, runs):
    code, _, err = run_cli(["runs", "compare", runs / "alpha", runs / "gamma"])
    assert code == 1
    assert "no evaluate/metrics.json" in err and "gamma" in err
    no_traceback(err)


@pytest.mark.parametrize("content", ['{"metrics": {"accuracy": null, "note": "x"}}', '[1, 2]', '{"task": "x"}', "{oops"])
def test_runs_tolerate_odd_metrics_files(run_cli, runs, content):
    (runs / "beta" / "evaluate" / "metrics.json").write_text(content)
    for args in (["runs", "list", runs], ["runs", "show", runs / "beta"], ["runs", "compare", runs / "alpha", runs / "beta"]):
        code, _, err = run_cli(args)
        assert code in (0, 1), err
        no_traceback(err)
