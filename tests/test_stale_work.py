"""Stage commands never use stale work: each stage checks its upstream stages against the current
recipe with the keys `adaptctl run` uses.  A missing or stale prepare is run first; a missing or
stale training stage under evaluate or export is exit 1 naming what changed and the command to run.

A tiny random BERT classifier (the packaged MiniLM tokenizer) and a small CSV; one complete run is
made per module and copied for each test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from test_train_methods import classification_setup

TRAIN = {"max_steps": 2, "batch_size": 8, "precision": "fp32", "validate": False}
METHOD = {"name": "lora", "r": 4, "target_modules": ["query", "value"]}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(recipe path, a complete run directory: prepare, train, evaluate, export)."""
    from adaptctl.core import console
    from adaptctl.cli import main

    folder = tmp_path_factory.mktemp("stale")
    recipe = {**classification_setup(folder), "method": METHOD, "train": TRAIN,
              "export": {"verify": False}}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    run = folder / "run"
    assert main(["run", str(path), "--run-dir", str(run), "--quiet"]) == 0
    console.set_quiet(False)
    return path, run


@pytest.fixture
def run(made, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(made[1], copy)
    return copy


def manifest(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "manifest.json").read_text())


# ------------------------------------------------------------------ a fresh run directory
def test_train_on_a_fresh_run_directory_prepares_first(made, run_cli, tmp_path):
    recipe, fresh = made[0], tmp_path / "fresh"
    code, _, err = run_cli(["train", recipe, "--run-dir", fresh])
    assert code == 0, err
    assert "prepare: missing; preparing the data first" in err
    assert manifest(fresh, "prepare")["status"] == manifest(fresh, "train")["status"] == "complete"


@pytest.mark.parametrize("stage", ["evaluate", "export"])
def test_evaluate_or_export_on_a_fresh_run_directory_names_train(made, run_cli, tmp_path, stage):
    recipe, fresh = made[0], tmp_path / "fresh"
    code, _, err = run_cli([stage, recipe, "--run-dir", fresh])
    assert code == 1
    assert f"{stage} needs the train stage of this recipe" in err and "is missing" in err
    assert f"adaptctl train {recipe} --run-dir {fresh}" in err
    assert "Traceback" not in err and not (fresh / "prepare").exists(), "nothing runs before the refusal"


def test_no_upstream_refuses_instead_of_preparing(made, run_cli, tmp_path):
    recipe, fresh = made[0], tmp_path / "fresh"
    code, _, err = run_cli(["train", recipe, "--run-dir", fresh, "--no-upstream"])
    assert code == 1
    assert "train needs the prepare stage of this recipe" in err and f"adaptctl prepare {recipe}" in err
    assert not (fresh / "prepare").exists() and not (fresh / "train").exists()


def test_prepare_on_a_fresh_run_directory(made, run_cli, tmp_path):
    code, _, err = run_cli(["prepare", made[0], "--run-dir", tmp_path / "fresh"])
    assert code == 0, err
    assert manifest(tmp_path / "fresh", "prepare")["status"] == "complete"


# ------------------------------------------------------------------ each section edited in turn
def test_a_data_edit_re_prepares_before_train(made, run, run_cli):
    before = manifest(run, "prepare")["key"]
    code, _, err = run_cli(["train", made[0], "--run-dir", run, "--set", "data.max_length=16"])
    assert code == 0, err
    assert "prepare: stale: data.max_length changed (32 -> 16); preparing the data first" in err
    assert manifest(run, "prepare")["key"] != before
    from datasets import load_from_disk

    lengths = [len(ids) for ids in load_from_disk(str(run / "prepare" / "data"))["train"]["input_ids"]]
    assert max(lengths) <= 16, "train used the data of the edited recipe"


def test_a_data_file_edited_in_place_re_prepares(made, tmp_path, run, run_cli):
    recipe = yaml.safe_load(made[0].read_text())
    data = tmp_path / "edited.csv"
    shutil.copy(recipe["data"]["source"], data)
    recipe["data"]["source"] = str(data)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert run_cli(["train", path, "--run-dir", run])[0] == 0
    data.write_text(data.read_text() + "the match goal team,sport\n")
    code, _, err = run_cli(["evaluate", path, "--run-dir", run])
    assert code == 1 and "the content of data.source changed" in err
    code, _, err = run_cli(["train", path, "--run-dir", run])
    assert code == 0 and "prepare: stale: the content of data.source changed" in err


@pytest.mark.parametrize("override, field", [
    ("data.max_length=16", "data.max_length changed (32 -> 16)"),
    ("seed=7", "seed changed (3 -> 7)"),
    ("model.allow_pickle=true", "model.allow_pickle changed (False -> True)"),
    ("method.r=2", "method.r changed (4 -> 2)"),
    ("train.learning_rate=0.01", "train.learning_rate changed (None -> 0.01)"),
])
@pytest.mark.parametrize("stage", ["evaluate", "export"])
def test_a_stale_model_is_refused_naming_the_field(made, run, run_cli, override, field, stage):
    before = {s: (run / s / "manifest.json").read_bytes() for s in ("prepare", "train", "evaluate", "export")}
    code, _, err = run_cli([stage, made[0], "--run-dir", run, "--set", override])
    assert code == 1
    assert f"{stage} needs the train stage of this recipe, but {run / 'train'} is stale: {field}" in err
    assert "adaptctl train" in err and "with the same --set options" in err
    assert before == {s: (run / s / "manifest.json").read_bytes() for s in before}, "a refusal changes nothing"


def test_a_method_edit_retrains_without_re_preparing(made, run, run_cli):
    prepared = manifest(run, "prepare")["key"]
    code, _, err = run_cli(["train", made[0], "--run-dir", run, "--set", "method.r=2"])
    assert code == 0, err
    assert "preparing the data first" not in err and manifest(run, "prepare")["key"] == prepared


@pytest.mark.parametrize("override", ["evaluate.max_examples=3", "export.merge_adapter=false", "name=renamed",
                                      "description=changed"])
def test_edits_below_training_keep_the_trained_model(made, run, run_cli, override):
    trained = (run / "train" / "manifest.json").read_bytes()
    for stage in ("evaluate", "export"):
        code, _, err = run_cli([stage, made[0], "--run-dir", run, "--set", override])
        assert code == 0, f"{stage} --set {override}: {err}"
    assert (run / "train" / "manifest.json").read_bytes() == trained


def test_export_leaves_a_stale_evaluation_out_of_the_card(made, run, run_cli):
    code, _, err = run_cli(["export", made[0], "--run-dir", run, "--set", "evaluate.max_examples=3"])
    assert code == 0, err
    assert "the model card leaves its metrics out" in err
    card = (run / "export" / "model" / "README.md").read_text()
    assert "Not evaluated." in card


def test_run_re_exports_after_a_re_evaluation(made, run, run_cli):
    code, out, err = run_cli(["run", made[0], "--run-dir", run, "--json", "--set", "evaluate.max_examples=3"])
    assert code == 0, err
    assert json.loads(out)["stages"] == {"prepare": "skipped", "train": "skipped", "evaluate": "complete",
                                         "export": "complete"}
    assert "Split `test`, 3 examples." in (run / "export" / "model" / "README.md").read_text()


# ------------------------------------------------------------------ how keys are made
def test_stage_keys_cover_every_section_but_those_listed_as_unread(made):
    from adaptctl.cli import _context
    from adaptctl.run.freshness import COUNTED_WHERE_SET, NOT_READ_BY, key_parts

    ctx = _context(made[0], made[1], [])
    dumped = ctx.recipe.model_dump(mode="json")
    # a section added later and left unset is no part of any key (runs made before it keep theirs)
    every = set(dumped) - {s for s in COUNTED_WHERE_SET if dumped[s] is None}
    for stage, unread in NOT_READ_BY.items():
        if stage == "distill":
            continue  # this recipe has no distill section
        assert set(key_parts(stage, ctx)["recipe"]) == every - set(unread), stage
    changed = _context(made[0], made[1], ["train.precision=bf16"])
    assert key_parts("evaluate", ctx)["recipe"]["train"] != key_parts("evaluate", changed)["recipe"]["train"], \
        "evaluate reads train.precision (prompting's inference precision)"
    renamed = _context(made[0], made[1], ["description=another"])
    assert key_parts("export", ctx) != key_parts("export", renamed), "the model card quotes the description"


def test_threads_are_set_logged_and_retrain_nothing(made, run, run_cli):
    import torch

    before = torch.get_num_threads()
    trained = (run / "train" / "manifest.json").read_bytes()
    try:
        code, _, err = run_cli(["evaluate", made[0], "--run-dir", run, "--threads", "1"])
        assert code == 0, err
        assert "evaluate: 1 CPU threads (--threads)" in err and torch.get_num_threads() == 1
        code, _, err = run_cli(["evaluate", made[0], "--run-dir", run, "--set", "train.threads=1"])
        assert code == 0 and "evaluate: 1 CPU threads (train.threads)" in err, "train.threads is no reason to re-train"
    finally:
        torch.set_num_threads(before)
    assert (run / "train" / "manifest.json").read_bytes() == trained


def test_prepare_hashes_each_data_file_once(made, run_cli, tmp_path, monkeypatch):
    from adaptctl.core import rundir

    source = Path(yaml.safe_load(made[0].read_text())["data"]["source"]).resolve()
    hashed = []
    original = rundir.file_hash

    def counting(path):
        hashed.append(Path(path).resolve())
        return original(path)

    monkeypatch.setattr("adaptctl.stages.prepare.file_hash", counting)
    code, _, err = run_cli(["train", made[0], "--run-dir", tmp_path / "fresh"])
    assert code == 0, err
    assert hashed.count(source) == 1


def test_metrics_jsonl_ends_with_the_summary_even_when_shorter_than_logging_steps(made):
    rows = [json.loads(line) for line in (made[1] / "train" / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in rows if "loss" in r], "2 steps < logging_steps 10: no step rows"
    last = rows[-1]
    assert last["summary"] is True and last["steps"] == 2 and last["tokens"] > 0
    assert last["train_loss"] > 0 and last["seconds"] > 0
