"""Baselines (evaluate.baseline): the majority class figured by hand, how a recipe chooses one
(compare_with_base as the older spelling), and end to end on tiny random models: the baseline's kind
in metrics.json and report.md, predictions.base.jsonl row for row beside predictions.jsonl, and the
zero-shot baseline of a causal LM scoring label names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset

import tiny_generation as tg
from adaptctl.core.errors import UserError
from adaptctl.recipe.loader import load_recipe
from adaptctl.stages import baselines
from adaptctl.tasks import majority


def _recipe(**evaluate):
    recipe = tg.recipe_dict(Path("m"), Path("d.csv"), task="classification", method="lora")
    recipe["data"] = {"source": "d.csv", "text": "text", "label": "label"}
    recipe["evaluate"] = evaluate
    return tg.load(recipe)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ majority class, by hand
def test_majority_class_figures_by_hand():
    train = Dataset.from_dict({"text": list("uvwxyz"), "label": ["a", "a", "a", "b", "b", "c"]})
    test = Dataset.from_dict({"text": list("pqrst"), "label": ["a", "b", "a", "c", "b"]})
    result = majority.majority_class(test, train, _recipe(), {"a": 0, "b": 1, "c": 2})
    assert [p["prediction"] for p in result.predictions] == ["a"] * 5
    # Always "a": 2 of 5 right. Macro over a, b, c: precision (2/5, 0, 0), recall (1, 0, 0), F1 (4/7, 0, 0).
    assert result.metrics["accuracy"] == pytest.approx(0.4)
    assert result.metrics["precision"] == pytest.approx(0.4 / 3)
    assert result.metrics["recall"] == pytest.approx(1 / 3)
    assert result.metrics["f1"] == pytest.approx(4 / 7 / 3)
    assert result.metrics["mcc"] == 0
    first = result.predictions[0]
    assert first["input"] == "p" and first["reference"] == "a" and first["score"] == 0.5
    assert first["probabilities"] == {"a": 0.5, "b": pytest.approx(1 / 3, abs=1e-6), "c": pytest.approx(1 / 6, abs=1e-6)}
    assert result.extras["majority_label"] == "a" and result.extras["train_share"] == 0.5


def test_majority_class_ties_go_to_the_lower_label_id_and_binary_f1_is_the_positive_class():
    train = Dataset.from_dict({"text": ["1", "2", "3", "4"], "label": ["spam", "ham", "spam", "ham"]})
    test = Dataset.from_dict({"text": ["5", "6", "7"], "label": ["spam", "ham", "ham"]})
    result = majority.majority_class(test, train, _recipe(), {"ham": 0, "spam": 1})
    assert {p["prediction"] for p in result.predictions} == {"ham"}
    assert result.metrics["accuracy"] == pytest.approx(2 / 3)
    assert result.metrics["f1"] == 0, "never predicts spam: the positive class's F1 is 0"


def test_majority_class_without_train_rows_names_the_field():
    test = Dataset.from_dict({"text": ["a"], "label": ["x"]})
    with pytest.raises(UserError) as error:
        majority.majority_class(test, test.select([]), _recipe(), {"x": 0})
    assert error.value.message.startswith("evaluate.baseline") and "none" in error.value.hint


# ------------------------------------------------------------------ choosing a baseline
def _config(folder: Path, architectures: list[str], **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": architectures, **extra}))
    return folder


def test_compare_with_base_is_the_older_spelling_of_auto():
    assert _recipe().evaluate.baseline_request() == "none"
    assert _recipe(compare_with_base=True).evaluate.baseline_request() == "auto"
    assert _recipe(compare_with_base=True, baseline="none").evaluate.baseline_request() == "none"
    assert _recipe(baseline="majority").evaluate.baseline_request() == "majority"


def test_auto_prompts_a_causal_lm_and_counts_labels_for_an_encoder(tmp_path):
    bert = _config(tmp_path / "bert", ["BertModel"])
    llama = _config(tmp_path / "llama", ["LlamaForCausalLM"])
    t5 = _config(tmp_path / "t5", ["T5ForConditionalGeneration"], is_encoder_decoder=True)
    auto = _recipe(baseline="auto")
    assert baselines.choose(auto, bert) == "majority" and baselines.choose(auto, t5) == "majority"
    assert baselines.choose(auto, llama) == "zero-shot"
    assert baselines.choose(_recipe(baseline="majority"), llama) == "majority"
    assert baselines.choose(_recipe(baseline="base-model"), bert) == "base-model"
    assert baselines.choose(_recipe(), llama) is None
    assert baselines.kind("zero-shot", _recipe(few_shot=3)) == "3-shot-prompting"
    assert baselines.kind("majority", auto) == "majority-class"


def test_zero_shot_on_an_encoder_is_refused_by_field(tmp_path):
    with pytest.raises(UserError) as error:
        baselines.choose(_recipe(baseline="zero-shot"), _config(tmp_path / "bert", ["BertForMaskedLM"]))
    assert error.value.message.startswith("evaluate.baseline: zero-shot") and "BertForMaskedLM" in error.value.message
    assert "majority" in error.value.hint


@pytest.mark.parametrize("task, method, baseline, message", [
    ("causal-lm", "lora", "majority", "for classification, not causal-lm"),
    ("extractive-qa", "lora", "zero-shot", "no prompting baseline"),
    ("classification", "prompting", "zero-shot", "already evaluates the untrained base model"),
])
def test_a_baseline_the_task_cannot_have_is_a_located_error(tmp_path, task, method, baseline, message):
    data = {"classification": "  text: text\n  label: label\n", "causal-lm": "  prompt: '{q}'\n  response: '{a}'\n",
            "extractive-qa": ""}[task]
    path = tmp_path / "recipe.yaml"
    path.write_text(f"name: t\ntask: {task}\nmodel: {{base: m}}\ndata:\n  source: d.csv\n{data}"
                    f"method: {{name: {method}}}\nevaluate:\n  baseline: {baseline}\n")
    with pytest.raises(UserError) as error:
        load_recipe(path, [])
    [detail] = [d for d in error.value.details if "evaluate.baseline" in d]
    assert f"recipe.yaml:{8 + data.count(chr(10))}" in detail and message in detail


# ------------------------------------------------------------------ end to end, tiny models
@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    from tiny_classifier import tiny_classifier_recipe

    return tiny_classifier_recipe(tmp_path_factory.mktemp("baseline-classifier"))


def test_majority_baseline_through_the_cli(tiny_classifier, run_cli, tmp_path):
    """compare_with_base: true on a BERT classifier is the majority class now, not the random head."""
    from datasets import load_from_disk

    run = tmp_path / "run"
    code, out, err = run_cli(["run", tiny_classifier, "--run-dir", run, "--json", "--set", "evaluate.compare_with_base=true"])
    assert code == 0, err
    document = json.loads((run / "evaluate" / "metrics.json").read_text())
    adapted, base = _jsonl(run / "evaluate" / "predictions.jsonl"), _jsonl(run / "evaluate" / "predictions.base.jsonl")
    assert len(base) == len(adapted) == document["num_examples"]
    assert [(b["input"], b["reference"]) for b in base] == [(a["input"], a["reference"]) for a in adapted]
    assert set(base[0]) == set(adapted[0]) and set(base[0]["probabilities"]) == set(adapted[0]["probabilities"])

    # The train split's most frequent label (ties: the lower id), and the test accuracy it gets.
    train = load_from_disk(str(run / "prepare" / "data"))["train"]["label"]
    majority = max(sorted(set(train)), key=train.count)
    references = [a["reference"] for a in adapted]
    baseline = document["baseline"]
    assert baseline["kind"] == "majority-class" and baseline["model"] is None and baseline["label"] == majority
    assert {b["prediction"] for b in base} == {majority}
    assert baseline["metrics"]["accuracy"] == pytest.approx(references.count(majority) / len(references), abs=1e-6)
    assert baseline["train_share"] == pytest.approx(train.count(majority) / len(train), abs=1e-6)
    manifest = json.loads((run / "evaluate" / "manifest.json").read_text())
    assert manifest["outputs"]["base_predictions"] == "evaluate/predictions.base.jsonl"

    report = (run / "evaluate" / "report.md").read_text()
    assert "| metric | adapted | 95% CI | majority-class | gain | gain 95% CI |" in report
    assert f"Baseline `majority-class`: every example labelled `{majority}`" in report
    assert "| input | reference | prediction | score | majority-class |" in report
    rows = [line for line in report.splitlines() if line.count("|") == 6 and not line.startswith(("| input", "|---"))]
    assert rows and all(line.endswith(f"| {majority} |") for line in rows), "the baseline's output per example"

    # Asked for none (baseline wins over compare_with_base): no baseline, and no stale base predictions.
    code, _, err = run_cli(["evaluate", tiny_classifier, "--run-dir", run, "--set", "evaluate.compare_with_base=true",
                            "--set", "evaluate.baseline=none"])
    assert code == 0, err
    assert "baseline" not in json.loads((run / "evaluate" / "metrics.json").read_text())
    assert not (run / "evaluate" / "predictions.base.jsonl").exists()
    assert "majority-class" not in (run / "evaluate" / "report.md").read_text()


def test_zero_shot_on_an_encoder_is_refused_before_anything_trains(tiny_classifier, run_cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli(["run", tiny_classifier, "--run-dir", run, "--set", "evaluate.baseline=zero-shot"])
    assert code == 1 and "evaluate.baseline: zero-shot" in err and "Traceback" not in err
    assert not (run / "prepare" / "data").exists() and not (run / "train" / "model").exists()


def test_zero_shot_baseline_of_a_tiny_llama_classifier(run_cli, tmp_path):
    model = tg.save_tiny_llama(tmp_path / "tiny-llama")
    data = tmp_path / "sms.csv"
    data.write_text("text,label\n" + "".join(f"free prize {i} now,spam\nlunch at {i}?,ham\n" for i in range(16)))
    recipe = tg.recipe_dict(model, data, task="classification", method="full")
    recipe["data"] = {"source": str(data), "text": "text", "label": "label", "splits": {"validation": 0.1, "test": 0.25},
                      "max_length": 32, "prompt": "Message: {text}\nIs it {labels}? Answer:"}
    recipe["train"].update(max_steps=2, validate=False)
    recipe["evaluate"] = {"baseline": "auto", "batch_size": 8}
    path = tg.write_recipe(tmp_path / "recipe.yaml", recipe)
    run = tmp_path / "run"
    code, _, err = run_cli(["run", path, "--run-dir", run, "--stages", "prepare,train,evaluate"])
    assert code == 0, err
    document = json.loads((run / "evaluate" / "metrics.json").read_text())
    assert document["baseline"]["kind"] == "zero-shot-prompting" and document["baseline"]["model"] == str(model)
    assert {"accuracy", "f1"} <= set(document["baseline"]["metrics"])
    adapted, base = _jsonl(run / "evaluate" / "predictions.jsonl"), _jsonl(run / "evaluate" / "predictions.base.jsonl")
    assert [b["input"] for b in base] == [a["input"] for a in adapted] and len(base) == document["num_examples"]
    assert set(base[0]["probabilities"]) == {"ham", "spam"} and sum(base[0]["probabilities"].values()) == pytest.approx(1)
    report = (run / "evaluate" / "report.md").read_text()
    assert "| metric | adapted | 95% CI | zero-shot-prompting | gain | gain 95% CI |" in report
    assert "prompted, without training" in report
