"""Issue 20, evaluation users can trust: metric details, class imbalance, calibration, slices,
explanations and generative QA, on tiny random models built from configs (seconds, no download)."""

from __future__ import annotations

import json
import re

import pytest


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A LoRA run of the tiny classifier (labels neg, pos), trained and evaluated."""
    from tiny_classifier import trained_tiny_run

    return trained_tiny_run(tmp_path_factory.mktemp("trust"))


# ------------------------------------------------------------------ metric details
def test_rouge_is_the_mean_of_the_per_example_scores():
    from rouge_score import rouge_scorer

    from adaptctl.evaluation.metrics import generation_metrics

    predictions, references = ["the cat sat", "a dog ran far away"], [["the cat sat"], ["the dog walked"]]
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    expected = sum(scorer.score(r[0], p)["rouge1"].fmeasure for p, r in zip(predictions, references)) / 2
    first = generation_metrics(predictions, references)
    assert first["rouge1"] == pytest.approx(expected)
    assert generation_metrics(predictions, references) == first  # no resampling: the same every run


def test_the_inferred_positive_class_is_said_and_the_recipe_s_is_used(tiny_run, run_cli):
    recipe, run_dir = tiny_run
    document = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert document["positive_label"] == {"label": "pos", "inferred": True}
    report = (run_dir / "evaluate" / "report.md").read_text()
    assert "`pos` as the positive class, inferred" in report
    assert "| class | precision | recall | f1 | support | share |" in report and "| neg |" in report

    code, _, err = run_cli(["evaluate", recipe, "--run-dir", run_dir, "--set", "evaluate.positive_label=neg", "-q"])
    assert code == 0, err
    document = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert document["positive_label"] == {"label": "neg", "inferred": False}
    per_class = document["per_class"]["neg"]
    assert document["metrics"]["recall"] == pytest.approx(per_class["recall"], abs=1e-6)
    run_cli(["evaluate", recipe, "--run-dir", run_dir, "-q"])  # back to the run's own recipe for later tests


# ------------------------------------------------------------------ class imbalance
def test_inverse_frequency_weighs_every_class_as_if_balanced():
    from adaptctl.training.label_loss import inverse_frequency

    assert inverse_frequency([0, 0, 0, 1, -100], 2) == pytest.approx((4 / 6, 2.0))


def test_the_trainer_uses_the_weighted_smoothed_loss_and_distillation_too():
    from types import SimpleNamespace

    import torch
    import torch.nn.functional as F

    from adaptctl.distill.losses import transfer_set_loss
    from adaptctl.training.label_loss import LabelLoss
    from adaptctl.training.session import GuardedTrainer

    torch.manual_seed(0)
    logits = torch.randn(6, 2)
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    model = lambda **inputs: SimpleNamespace(logits=logits, loss=F.cross_entropy(logits, labels))  # noqa: E731
    loss = LabelLoss((1.0, 3.0), 0.1)
    trainer = SimpleNamespace(label_loss=loss)
    got = GuardedTrainer.compute_loss(trainer, model, {"input_ids": None, "labels": labels})
    expected = F.cross_entropy(logits, labels, weight=torch.tensor([1.0, 3.0]), label_smoothing=0.1)
    assert got == pytest.approx(float(expected)) and got != pytest.approx(float(F.cross_entropy(logits, labels)))

    # distillation's transfer set: each labelled row's CE times its class weight; a copy (-100) has none
    teacher, mixed = torch.randn(6, 2), torch.tensor([0, 0, -100, 0, 1, 1])
    plain = transfer_set_loss(logits, teacher, mixed, temperature=1.0, alpha=0.0, kind="kl")
    weighted = transfer_set_loss(logits, teacher, mixed, temperature=1.0, alpha=0.0, kind="kl",
                                 label_loss=LabelLoss((1.0, 3.0)))
    assert float(weighted) > float(plain)


def _edited(recipe, old: str, new: str):
    text = recipe.read_text()
    assert old in text
    copy = recipe.with_name("edited.yaml")
    copy.write_text(text.replace(old, new))
    return copy


def test_class_weights_train_and_a_label_that_is_not_in_the_data_is_located(tiny_run, run_cli, tmp_path):
    recipe, run_dir = tiny_run
    plain = json.loads((run_dir / "train" / "manifest.json").read_text())["metrics"]["train_loss"]
    weighted = _edited(recipe, "validate: false}", "validate: false, class_weights: {pos: 20}, label_smoothing: 0.2}")
    code, _, err = run_cli(["train", weighted, "--run-dir", tmp_path / "run", "-q"])
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "train" / "manifest.json").read_text())["metrics"]["train_loss"] != plain

    typo = _edited(recipe, "validate: false}", "validate: false,\n  class_weights: {poss: 2}}")
    code, _, err = run_cli(["train", typo, "--run-dir", tmp_path / "run", "-q"])
    assert code == 1 and "Traceback" not in err
    assert re.search(r"edited.yaml:\d+:\d+: train.class_weights.poss: 'poss' is not a label of the data", err), err
    assert "did you mean 'pos'?" in err


def test_class_weights_for_a_task_without_labels_is_a_validate_error(tmp_path, run_cli):
    from tiny_generation import recipe_dict, write_recipe

    recipe = recipe_dict(tmp_path / "model", tmp_path / "data.jsonl", train={"class_weights": "auto"})
    code, _, err = run_cli(["validate", write_recipe(tmp_path / "r.yaml", recipe)])
    assert code == 1 and "train.class_weights: train.class_weights is for tasks with labels" in err, err


# ------------------------------------------------------------------ calibration
def test_ece_and_a_fitted_temperature_undo_overconfidence():
    import random

    from adaptctl.evaluation.calibration import expected_calibration_error, fit_temperature, softmax

    assert expected_calibration_error([[0.8, 0.2]] * 5, [0, 0, 0, 0, 1]) == pytest.approx(0.0)
    assert expected_calibration_error([[1.0, 0.0]] * 4, [0, 0, 1, 1]) == pytest.approx(0.5)
    rng = random.Random(0)
    # right 75% of the time, but 10 logits apart: near-certain; the temperature should soften it
    labels = [rng.randrange(2) for _ in range(400)]
    logits = [[10.0, 0.0] if (y == 0) == (rng.random() < 0.75) else [0.0, 10.0] for y in labels]
    temperature = fit_temperature(logits, labels)
    assert temperature > 2
    assert expected_calibration_error(softmax(logits, temperature), labels) < 0.05 < \
        expected_calibration_error(softmax(logits), labels)


def test_calibrate_fits_on_validation_reports_before_and_after_and_travels_to_predict(tiny_run, run_cli, tmp_path):
    import math

    recipe, run_dir = tiny_run
    calibrated = _edited(recipe, "validate: false}", "validate: false}\nevaluate: {calibrate: true}")
    run = tmp_path / "run"
    code, _, err = run_cli(["run", calibrated, "--run-dir", run, "--set", "export.verify=false"])
    assert code == 0, err
    assert "fitting a temperature on 4 validation examples" in err
    assert "train: learning rate 0.001 (lora's default for classification)" in err  # unset: said, with its source
    document = json.loads((run / "evaluate" / "metrics.json").read_text())
    calibration = document["calibration"]
    assert calibration["fitted_on"] == "validation" and calibration["temperature"] > 0
    assert document["metrics"]["ece"] == pytest.approx(calibration["ece_after"], abs=1e-6)
    assert (run / "evaluate" / "reliability.png").stat().st_size > 1000
    report = (run / "evaluate" / "report.md").read_text()
    assert f"temperature {calibration['temperature']:.4f} fitted on the validation split" in report
    export_info = json.loads((run / "export" / "model" / "adaptctl.json").read_text())
    assert export_info["temperature"] == pytest.approx(calibration["temperature"])

    first = json.loads((run / "evaluate" / "predictions.jsonl").read_text().splitlines()[0])
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": first["input"]}) + "\n")
    code, out, err = run_cli(["predict", run / "export" / "model", "--input", tmp_path / "in.jsonl"])
    assert code == 0, err
    predicted = json.loads(out)["probabilities"]
    assert predicted == pytest.approx(first["probabilities"], abs=2e-5)
    # and not the uncalibrated probabilities, unless the fitted temperature is 1
    assert not math.isclose(calibration["temperature"], 1.0, abs_tol=1e-3)


def test_calibration_needs_a_validation_split_and_a_classifier(tmp_path, run_cli):
    from tiny_generation import recipe_dict, write_recipe

    recipe = recipe_dict(tmp_path / "model", tmp_path / "data.jsonl", evaluate={"calibrate": True})
    code, _, err = run_cli(["validate", write_recipe(tmp_path / "r.yaml", recipe)])
    assert code == 1 and "evaluate.calibrate: calibration is for classification, not causal-lm" in err, err
    recipe = {**recipe, "task": "classification",
              "data": {"source": "d.csv", "text": "t", "label": "l", "splits": {"validation": 0, "test": 0.2}}}
    code, _, err = run_cli(["validate", write_recipe(tmp_path / "r.yaml", recipe)])
    assert code == 1 and "r.yaml:" in err and "evaluate.calibrate: the temperature is fitted on the validation split" in err, err


# ------------------------------------------------------------------ slices
def test_slices_report_every_metric_per_value_with_counts_gap_and_plot(tmp_path, run_cli):
    from tiny_classifier import tiny_classifier_recipe

    recipe = tiny_classifier_recipe(tmp_path)
    lines = (tmp_path / "data.csv").read_text().splitlines()
    (tmp_path / "data.csv").write_text("\n".join([lines[0] + ",group"] + [f"{line},g{i % 3}" for i, line in
                                                                          enumerate(lines[1:])]) + "\n")
    sliced = _edited(recipe, "validate: false}", "validate: false}\nevaluate:\n  slices: [group, '{group}/{label}']")
    code, _, err = run_cli(["run", sliced, "--run-dir", tmp_path / "run", "--stages", "prepare,train,evaluate", "-q"])
    assert code == 0, err
    document = json.loads((tmp_path / "run" / "evaluate" / "metrics.json").read_text())
    groups = document["slices"]["group"]
    assert set(groups["values"]) <= {"g0", "g1", "g2"}
    assert sum(row["count"] for row in groups["values"].values()) == document["num_examples"]
    accuracies = [row["metrics"]["accuracy"] for row in groups["values"].values()]
    assert groups["gap"]["accuracy"] == pytest.approx(max(accuracies) - min(accuracies), abs=1e-6)
    by_pair = document["slices"]["{group}/{label}"]["values"]
    assert all(value.split("/")[1] in ("pos", "neg") for value in by_pair)
    predictions = [json.loads(line) for line in (tmp_path / "run" / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    for value, row in by_pair.items():  # a slice of one label: its accuracy is that label's share of right answers
        picked = [p for p in predictions if p["reference"] == value.split("/")[1]]
        assert row["count"] <= len(picked)
    report = (tmp_path / "run" / "evaluate" / "report.md").read_text()
    assert "## By `group`" in report and "| best - worst |" in report
    assert (tmp_path / "run" / "evaluate" / "slice_0.png").stat().st_size > 1000
    train = json.loads((tmp_path / "run" / "prepare" / "stats.json").read_text())
    assert train["splits"]["train"]["rows"] > 0

    missing = _edited(recipe, "validate: false}", "validate: false}\nevaluate:\n  slices: [groupp]")
    code, _, err = run_cli(["prepare", missing, "--run-dir", tmp_path / "run2"])
    assert code == 1 and "Traceback" not in err
    assert re.search(r"edited.yaml:\d+:\d+: evaluate.slices.0: column 'groupp' is not in .*data.csv", err), err
    assert "the columns there are: text, label, group" in err


# ------------------------------------------------------------------ explanations
def test_explanations_of_the_worst_and_best_examples_and_per_prediction(tiny_run, run_cli, tmp_path):
    recipe, run_dir = tiny_run
    code, _, err = run_cli(["evaluate", recipe, "--run-dir", run_dir, "--set", "evaluate.explain=2", "-q"])
    assert code == 0, err
    rows = [json.loads(line) for line in (run_dir / "evaluate" / "attributions.jsonl").read_text().splitlines()]
    assert rows and {row["kind"] for row in rows} <= {"worst", "best"} and len(rows) <= 4
    predictions = [json.loads(line) for line in (run_dir / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    for row in rows:
        assert predictions[row["index"]]["input"] == row["input"]
        scores = [score for _, score in row["tokens"]]
        assert max(abs(s) for s in scores) == pytest.approx(1.0)
        assert row["top_tokens"][0] == max(row["tokens"], key=lambda pair: pair[1])[0]
        assert "[CLS]" not in [token for token, _ in row["tokens"]]
    report = (run_dir / "evaluate" / "report.md").read_text()
    assert "## Explanations" in report and f"**{rows[0]['top_tokens'][0].removeprefix('##')}**" in report

    (tmp_path / "in.txt").write_text("great lovely happy item 3\nawful broken sad item 4\n")
    code, out, err = run_cli(["predict", run_dir, "--input", tmp_path / "in.txt", "--explain"])
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [token for token, _ in lines[0]["attributions"]["tokens"]] == ["great", "lovely", "happy", "item", "3"]
    run_cli(["evaluate", recipe, "--run-dir", run_dir, "-q"])
    assert not (run_dir / "evaluate" / "attributions.jsonl").exists()  # not left for a run that asked for none


def test_explanations_for_a_task_without_them_are_refused(tmp_path, run_cli):
    from tiny_generation import recipe_dict, write_recipe

    from adaptctl.core.errors import UserError
    from adaptctl.predict import _check_explain

    recipe = recipe_dict(tmp_path / "model", tmp_path / "data.jsonl", evaluate={"explain": 3})
    code, _, err = run_cli(["validate", write_recipe(tmp_path / "r.yaml", recipe)])
    assert code == 1 and "evaluate.explain: task causal-lm has no explanations" in err, err
    with pytest.raises(UserError, match="--explain: a causal-lm model has no token attributions"):
        _check_explain("causal-lm", None, True)


# ------------------------------------------------------------------ generative QA
def test_answer_pattern_extracts_compares_numbers_and_counts_unmatched_generations():
    from adaptctl.evaluation.metrics import answer_metrics

    predictions = ["so 9 + 9 #### 18", "#### 18.0", "I do not know", "#### 1,000", "#### The Paris."]
    references = [["9 + 9 = 18 #### 18"], ["#### 18"], ["#### 5"], ["#### 1000"], ["paris"]]
    metrics, rows, _ = answer_metrics(predictions, references, r"####\s*(.+)")
    assert metrics["exact_match"] == pytest.approx(80.0) and metrics["f1"] == pytest.approx(80.0)
    assert metrics["unmatched"] == 1 and metrics["unmatched_references"] == 1
    assert rows[2]["predicted_answer"] is None and rows[0] == {"predicted_answer": "18", "reference_answer": "18"}
    partial, _, _ = answer_metrics(["#### red big ball"], [["#### red ball"]], r"####\s*(.+)")
    assert partial["exact_match"] == 0 and partial["f1"] == pytest.approx(100 * 0.8)


def test_generative_qa_through_evaluate_and_a_bad_pattern_is_a_validate_error(tmp_path, run_cli):
    import tiny_generation as tg

    model = tg.save_tiny_llama(tmp_path / "llama")
    data = tg.write_pairs(tmp_path / "pairs.jsonl")
    recipe = tg.recipe_dict(model, data, "causal-lm", "prompting", evaluate={"answer_pattern": r"ANSWER:\s*(\w+)"})
    path = tg.write_recipe(tmp_path / "recipe.yaml", recipe)
    code, _, err = run_cli(["run", path, "--run-dir", tmp_path / "run", "--stages", "prepare,evaluate", "-q"])
    assert code == 0, err
    document = json.loads((tmp_path / "run" / "evaluate" / "metrics.json").read_text())
    n = document["num_examples"]
    assert document["answers"]["unmatched"] == n == document["answers"]["unmatched_references"]
    assert document["metrics"]["exact_match"] == 0 and document["metrics"]["f1"] == 0
    first = json.loads((tmp_path / "run" / "evaluate" / "predictions.jsonl").read_text().splitlines()[0])
    assert first["predicted_answer"] is None and first["reference_answer"] == first["reference"]
    report = (tmp_path / "run" / "evaluate" / "report.md").read_text()
    assert f"| generations the pattern did not match | {n} of {n} |" in report and "counts as wrong" in report

    recipe["evaluate"]["answer_pattern"] = "####\\s*(\\d+"
    code, _, err = run_cli(["validate", tg.write_recipe(tmp_path / "bad.yaml", recipe)])
    assert code == 1 and "Traceback" not in err
    assert re.search(r"bad.yaml:\d+:\d+: evaluate.answer_pattern: '####\\\\s\*\(\\\\d\+' is not a regular expression", err), err


def test_squad_json_answered_by_generation_sliced_by_article(tmp_path, run_cli):
    """SQuAD's nested JSON reaches a generative task as one row per question (data/squad.py): the context
    and question go into the prompt, every gold answer is a reference, data.splits.group keeps each
    paragraph's questions in one split, and slices score each article."""
    import tiny_generation as tg
    from test_extractive_qa import squad_document

    model = tg.save_tiny_llama(tmp_path / "llama")
    (tmp_path / "squad.json").write_text(json.dumps(squad_document()))
    recipe = tg.recipe_dict(model, tmp_path / "squad.json", "causal-lm", "prompting", evaluate={"slices": ["{title}"]})
    recipe["data"].update({"source": {"path": str(tmp_path / "squad.json"), "field": "data"},
                           "prompt": "Context: {context}\nQuestion: {question}\nAnswer:", "response": " {answer}",
                           "max_length": 256, "splits": {"validation": 0.0, "test": 0.5, "group": "{context}"}})
    path = tg.write_recipe(tmp_path / "qa.yaml", recipe)
    code, _, err = run_cli(["run", path, "--run-dir", tmp_path / "run", "--stages", "prepare,evaluate", "-q"])
    assert code == 0, err
    from datasets import load_from_disk

    prepared = load_from_disk(str(tmp_path / "run" / "prepare" / "data"))
    test, first = prepared["test"], prepared["test"][0]
    context_of = lambda split: {p.split("\nQuestion: ")[0] for p in split["prompt"]}  # noqa: E731
    assert not context_of(prepared["train"]) & context_of(test)  # splits.group: no paragraph in both
    assert first["prompt"].startswith("Context: ") and "\nQuestion: " in first["prompt"]
    assert first["references"] and first["response"] == " " + first["references"][0]
    document = json.loads((tmp_path / "run" / "evaluate" / "metrics.json").read_text())
    by_title = document["slices"]["{title}"]["values"]
    assert len(by_title) >= 2 and sum(row["count"] for row in by_title.values()) == document["num_examples"]
    assert all({"exact_match", "f1"} <= set(row["metrics"]) for row in by_title.values())


def test_plain_text_perplexity_sliced_per_document_column(tmp_path, run_cli):
    """Continued pretraining cuts long documents into windows; each window keeps its document's slice value."""
    import tiny_generation as tg

    model = tg.save_tiny_llama(tmp_path / "llama")
    rows = [{"text": " ".join(tg.WORDS[i % len(tg.WORDS)] for i in range(n, n + 20 + 5 * (n % 7))),
             "source": "long" if n % 2 else "short"} for n in range(40)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tg.recipe_dict(model, tmp_path / "docs.jsonl", "causal-lm", "prompting", evaluate={"slices": ["source"]})
    recipe["data"].update({"text": "{text}", "prompt": None, "response": None, "max_length": 16})
    code, _, err = run_cli(["run", tg.write_recipe(tmp_path / "text.yaml", recipe), "--run-dir", tmp_path / "run",
                            "--stages", "prepare,evaluate", "-q"])
    assert code == 0, err
    document = json.loads((tmp_path / "run" / "evaluate" / "metrics.json").read_text())
    values = document["slices"]["source"]["values"]
    assert set(values) == {"long", "short"}
    assert all(row["metrics"]["perplexity"] > 1 for row in values.values())


def test_a_split_group_template_reading_no_column_is_located(tmp_path, run_cli):
    import tiny_generation as tg

    data = tg.write_pairs(tmp_path / "pairs.jsonl")
    recipe = tg.recipe_dict(tg.smol_path(), data, "causal-lm", "prompting")
    recipe["data"]["splits"]["group"] = "{paragraph}"
    code, _, err = run_cli(["validate", tg.write_recipe(tmp_path / "group.yaml", recipe)])
    assert code == 1 and "Traceback" not in err
    assert re.search(r"group.yaml:\d+:\d+: data.splits.group: column 'paragraph' is not in", err), err
