"""The forgetting check (evaluate.general) and evaluate.compare_with: base | parent (issue 17), on tiny
random models: general-text perplexity for the adapted model and its base, scored by the evaluation
that scores the domain split; the baseline run on the chain's first model or on model.base; the
base-model baseline's words where the base ships its own head."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.test_masked_lm import save_tiny_bert, write_recipe
from tests.tiny_generation import save_tiny_llama

GENERAL = ["The council approved the new budget for roads and schools on Monday.",
           "Shares of the carmaker fell after it cut its forecast for the year.",
           "The team won the final with a late goal in extra time.",
           "Scientists found water ice near the south pole of the moon.",
           "The museum reopened with an exhibition of early photographs."] * 4


def write_general(folder: Path) -> Path:
    path = folder / "general.jsonl"
    path.write_text("".join(json.dumps({"headline": t, "n": i}) + "\n" for i, t in enumerate(GENERAL)))
    return path


def with_evaluate(recipe: Path, **evaluate) -> Path:
    document = json.loads(recipe.read_text())
    document["evaluate"] = {**document.get("evaluate", {}), **evaluate}
    recipe.write_text(json.dumps(document))
    return recipe


def assert_general(document: dict, examples: int):
    general = document["general"]
    assert general["examples"] == examples and general["rows"] > 0 and general["scored_tokens"] > 0
    assert math.isfinite(general["perplexity"]) and math.isfinite(general["base_perplexity"])
    assert general["perplexity"] > 1 and general["base_perplexity"] > 1
    assert general["change"] == pytest.approx(general["perplexity"] - general["base_perplexity"], abs=1e-5)
    return general


# ------------------------------------------------------------------ masked-lm
@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory):
    """A tiny masked-lm run with a forgetting check on 12 of the 20 general headlines."""
    from adaptctl.core import console
    from adaptctl.cli import main

    root = tmp_path_factory.mktemp("forget-mlm")
    write_general(root)
    recipe = with_evaluate(write_recipe(root, save_tiny_bert(root / "base")),
                           general={"source": "general.jsonl", "text": "{headline}", "max_examples": 12})
    code = main(["run", str(recipe), "--run-dir", str(root / "run"), "-q"])
    console.set_quiet(False)
    return code, root


def test_masked_lm_scores_general_text_for_the_adapted_model_and_its_base(mlm_run):
    code, root = mlm_run
    assert code == 0
    document = json.loads((root / "run/evaluate/metrics.json").read_text())
    general = assert_general(document, 12)
    assert general["rows"] >= 12  # windows: at least one per headline
    assert general["source"] == str(root / "general.jsonl") and general["base_model"] == str(root / "base")
    assert general["perplexity"] != document["metrics"]["perplexity"]  # another text, another figure
    assert document["baseline"]["fresh_head"] is True and document["baseline"]["compared_with"] == "parent"
    report = (root / "run/evaluate/report.md").read_text()
    assert "## Forgetting check" in report and "| general |" in report and "| domain (`test` split) |" in report
    assert f"{general['change']:+.4f}" in report
    assert "freshly initialised" in report and "untrained, randomly initialised head" not in report
    card = (root / "run/export/model/README.md").read_text()
    assert f"Forgetting check: perplexity on general text (`{general['source']}`, 12 texts)" in card


def test_the_general_text_is_scored_on_the_same_masks_as_the_domain_split(mlm_run):
    """The general figures come from the task's own evaluation, with its seeded masks: scoring the same
    texts again through masked_lm.evaluate gives the adapted model's general perplexity exactly."""
    from datasets import Dataset
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from adaptctl.data.general import read_general_texts
    from adaptctl.recipe.loader import load_recipe
    from adaptctl.tasks.masked_lm import evaluate, tokenize

    code, root = mlm_run
    recipe = load_recipe(root / "recipe.yaml").recipe
    texts = read_general_texts(recipe.evaluate.general, root, recipe.seed)
    assert len(texts) == 12 and set(texts) <= set(GENERAL)
    tokenizer = AutoTokenizer.from_pretrained(str(root / "run/train/model"))
    split = tokenize(Dataset.from_dict({"text": texts}), tokenizer, recipe, {})
    model = AutoModelForMaskedLM.from_pretrained(str(root / "run/train/model")).eval()
    again = evaluate(model, tokenizer, split, recipe, {}).metrics["perplexity"]
    general = json.loads((root / "run/evaluate/metrics.json").read_text())["general"]
    assert again == pytest.approx(general["perplexity"], rel=1e-4)


def test_compare_with_base_runs_the_baseline_on_the_chains_first_model(mlm_run, tmp_path, run_cli):
    """A classifier on the masked-lm run: compare_with base scores its base-model baseline on the plain
    base the chain started from; parent (and the older compare_with_base) on the masked-lm run."""
    code, root = mlm_run
    assert code == 0
    rows = ["text,label"] + [f"item {i} about {'rivers' if i % 2 else 'stones'},{'a' if i % 2 else 'b'}" for i in range(40)]
    (tmp_path / "labelled.csv").write_text("\n".join(rows) + "\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "name": "tiny-task", "task": "classification", "seed": 3, "model": {"base": str(root / "run")},
        "data": {"source": "labelled.csv", "text": "text", "label": "label", "max_length": 24,
                 "splits": {"validation": 0.1, "test": 0.2}},
        "method": {"name": "full"}, "train": {"max_steps": 2, "batch_size": 8, "precision": "fp32", "validate": False},
        "evaluate": {"baseline": "base-model", "compare_with": "base"}}))
    code, _, err = run_cli(["run", recipe, "--run-dir", tmp_path / "run", "--stages", "prepare,train,evaluate"])
    assert code == 0, err
    against_base = json.loads((tmp_path / "run/evaluate/metrics.json").read_text())["baseline"]
    assert against_base["model"] == str(root / "base") and against_base["compared_with"] == "base"
    assert "first model of the chain" in (tmp_path / "run/evaluate/report.md").read_text()
    base_scores = _probabilities(tmp_path / "run/evaluate/predictions.base.jsonl")
    for setting in (["evaluate.compare_with=parent"], ["evaluate.compare_with=null", "evaluate.compare_with_base=true"]):
        code, _, err = run_cli(["evaluate", recipe, "--run-dir", tmp_path / "run", *(a for s in setting for a in ("--set", s))])
        assert code == 0, err
        against_parent = json.loads((tmp_path / "run/evaluate/metrics.json").read_text())["baseline"]
        assert against_parent["model"] == str(root / "run") and against_parent["compared_with"] == "parent"
        # the masked-lm run's encoder is not the plain base: the same seeded head scores the rows differently
        assert _probabilities(tmp_path / "run/evaluate/predictions.base.jsonl") != base_scores


def test_compare_with_base_gives_the_plain_base_the_words_an_earlier_phase_added(tmp_path, run_cli):
    """Phase 1 adds domain words (model.add_tokens); phase 2 continues it with a forgetting check against
    the plain base, which must read phase 2's tokenizer: it gets phase 1's words as phase 1 added them."""
    write_general(tmp_path)
    parent = write_recipe(tmp_path, save_tiny_bert(tmp_path / "base"))
    document = json.loads(parent.read_text())
    document["model"]["add_tokens"] = ["electroencephalography", "photosynthesis"]
    parent.write_text(json.dumps(document))
    code, _, err = run_cli(["run", parent, "--run-dir", tmp_path / "phase1", "--stages", "prepare,train",
                            "--set", "train.max_steps=2"])
    assert code == 0, err
    document["name"], document["model"] = "phase2", {"base": str(tmp_path / "phase1")}
    document["evaluate"] = {"compare_with": "base", "general": {"source": "general.jsonl", "text": "{headline}",
                                                                "max_examples": 6}}
    child = tmp_path / "phase2.yaml"
    child.write_text(json.dumps(document))
    code, _, err = run_cli(["run", child, "--run-dir", tmp_path / "phase2", "--stages", "prepare,train,evaluate",
                            "--set", "train.max_steps=2"])
    assert code == 0, err
    metrics = json.loads((tmp_path / "phase2/evaluate/metrics.json").read_text())
    assert metrics["baseline"]["model"] == str(tmp_path / "base") and metrics["baseline"]["compared_with"] == "base"
    assert assert_general(metrics, 6)["base_model"] == str(tmp_path / "base")


def _probabilities(path: Path) -> list:
    return [json.loads(line)["probabilities"] for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ causal-lm
def test_causal_lm_packed_run_scores_general_text_in_packed_blocks(tmp_path, run_cli):
    save_tiny_llama(tmp_path / "llama")
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"body": f"Document {i}: the river and a stone " * (i % 4 + 1)})
                                                 + "\n" for i in range(40)))
    (tmp_path / "general.txt").write_text("\n".join(GENERAL) + "\n")
    (tmp_path / "recipe.yaml").write_text(json.dumps({
        "name": "packed", "task": "causal-lm", "seed": 1, "model": {"base": str(tmp_path / "llama")},
        "data": {"source": "docs.jsonl", "text": "{body}", "packing": True, "max_length": 20,
                 "splits": {"validation": 0.1, "test": 0.2}},
        "method": {"name": "full"}, "evaluate": {"general": {"source": "general.txt"}},
        "train": {"max_steps": 8, "batch_size": 4, "learning_rate": 3e-3, "precision": "fp32", "validate": False}}))
    code, _, err = run_cli(["run", tmp_path / "recipe.yaml", "--run-dir", tmp_path / "run",
                            "--stages", "prepare,train,evaluate"])
    assert code == 0, err
    document = json.loads((tmp_path / "run/evaluate/metrics.json").read_text())
    general = assert_general(document, len(GENERAL))
    assert general["rows"] < len(GENERAL)  # packed: 20 headlines make a few blocks of 20 tokens
    assert general["scored_tokens"] == general["rows"] * 20 - general["rows"]  # each block predicts 19 tokens
    # the base model scored on the same text, not prompted (issue 33.8): its own head, and no `None` examples
    assert document["baseline"]["kind"] == "base-model" and "general-text perplexity" in err
    assert document["baseline"]["fresh_head"] is False
    report = (tmp_path / "run/evaluate/report.md").read_text()
    assert "as it ships, with its own pretrained head" in report and "| None |" not in report
    assert "| text | perplexity | base-model perplexity |" in report
    assert "## Forgetting check" in (tmp_path / "run/evaluate/report.md").read_text()


# ------------------------------------------------------------------ refusals
def write_tiny_recipe(folder: Path, task: str, data: dict, evaluate: dict, method: str = "full") -> Path:
    (folder / "d.jsonl").write_text(json.dumps({"t": "some text", "label": "a"}) + "\n")
    recipe = folder / "recipe.yaml"
    recipe.write_text(json.dumps({"name": "r", "task": task, "model": {"base": "x"}, "method": {"name": method},
                                  "data": {"source": "d.jsonl", **data}, "evaluate": evaluate}))
    return recipe


@pytest.mark.parametrize("task, data, method", [
    ("classification", {"text": "t", "label": "label"}, "full"),
    ("causal-lm", {"prompt": "{t}", "response": "{t}"}, "full"),  # instruction tuning: no plain-text perplexity
    ("causal-lm", {"text": "{t}"}, "prompting"),                  # nothing trained, nothing forgotten
])
def test_general_where_it_cannot_be_used_is_refused_at_its_line(tmp_path, run_cli, task, data, method):
    (tmp_path / "general.txt").write_text("general text\n")
    recipe = write_tiny_recipe(tmp_path, task, data, {"general": {"source": "general.txt"}}, method)
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and "Traceback" not in err, err
    assert "recipe.yaml:1:" in err and "evaluate.general" in err and "hint:" in err


def test_a_missing_general_file_is_named_at_evaluate_general_source(tmp_path, run_cli):
    recipe = write_tiny_recipe(tmp_path, "masked-lm", {"text": "{t}"}, {"general": {"source": "nowhere/general.txt"}})
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and "evaluate.general.source" in err and "general.txt" in err and "Traceback" not in err, err
    # and at the stage, before prepare and train run (the stage's inputs are hashed first)
    recipe = write_recipe(tmp_path, save_tiny_bert(tmp_path / "base"))
    with_evaluate(recipe, general={"source": "missing.jsonl", "text": "{headline}"})
    code, _, err = run_cli(["run", recipe, "--run-dir", tmp_path / "run"])
    assert code == 1 and "evaluate.general.source" in err and "missing.jsonl" in err and "Traceback" not in err, err
    assert "recipe.yaml:" in err and not (tmp_path / "run/train").exists()


def test_a_general_column_that_the_file_lacks_is_named_by_validate(tmp_path, run_cli):
    write_general(tmp_path)
    recipe = write_tiny_recipe(tmp_path, "masked-lm", {"text": "{t}"},
                               {"general": {"source": "general.jsonl", "text": "{body}"}})
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and "evaluate.general.text" in err and "'body'" in err and "headline" in err, err


@pytest.mark.parametrize("evaluate, field", [
    ({"compare_with": "grandparent"}, "evaluate.compare_with"),
    ({"compare_with": "base", "baseline": "none"}, "evaluate.compare_with"),
    ({"general": {"source": "d.jsonl", "max_examples": 0}}, "evaluate.general.max_examples"),
])
def test_compare_with_and_general_settings_are_validated(tmp_path, run_cli, evaluate, field):
    recipe = write_tiny_recipe(tmp_path, "masked-lm", {"text": "{t}"}, evaluate)
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and field in err and "Traceback" not in err, err


def test_compare_with_alone_asks_for_a_baseline_and_the_old_spelling_still_works():
    from adaptctl.recipe.schema import Evaluate

    assert Evaluate().baseline_request() == "none" and Evaluate().compared_with() == "parent"
    assert Evaluate(compare_with="base").baseline_request() == "auto"
    assert Evaluate(compare_with="base").compared_with() == "base"
    assert Evaluate(compare_with_base=True).baseline_request() == "auto"
    assert Evaluate(compare_with_base=True).compared_with() == "parent"
    assert Evaluate(general={"source": "g.txt"}).baseline_request() == "auto"
    assert Evaluate(general={"source": "g.txt"}, baseline="none").baseline_request() == "none"


# ------------------------------------------------------------------ the baseline's words
def test_the_base_model_baseline_says_whether_its_head_is_its_own(tmp_path):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from adaptctl.report import _baseline_sentence
    from adaptctl.tasks import get_task

    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=20)).save_pretrained(tmp_path / "with-head")
    masked_lm = get_task("masked-lm")
    assert masked_lm.fresh_head(tmp_path / "with-head") is False
    assert masked_lm.fresh_head(save_tiny_bert(tmp_path / "bare")) is True
    assert get_task("classification").fresh_head(tmp_path / "with-head") is True  # a classifier's head is always new
    own = _baseline_sentence({"kind": "base-model", "model": "m", "fresh_head": False}, "")
    fresh = _baseline_sentence({"kind": "base-model", "model": "m", "fresh_head": True}, "")
    assert "its own pretrained head" in own and "fresh" not in own and "random" not in own
    assert "freshly initialised" in fresh and "own pretrained" not in fresh
