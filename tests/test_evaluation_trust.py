"""Issue 20, evaluation users can trust: metric details, class imbalance, calibration, slices,
explanations and generative QA, on tiny random models built from configs (seconds, no download)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A LoRA run of the tiny classifier (labels neg, pos), trained and evaluated."""
    from adaptctl.cli import main
    from tiny_classifier import tiny_classifier_recipe

    root = tmp_path_factory.mktemp("trust")
    recipe = tiny_classifier_recipe(root)
    assert main(["run", str(recipe), "--run-dir", str(root / "run"), "--stages", "prepare,train,evaluate", "-q"]) == 0
    return recipe, root / "run"


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
    assert "| class | precision | recall | f1 | support |" in report and "| neg |" in report

    code, _, err = run_cli(["evaluate", recipe, "--run-dir", run_dir, "--set", "evaluate.positive_label=neg", "-q"])
    assert code == 0, err
    document = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert document["positive_label"] == {"label": "neg", "inferred": False}
    per_class = document["per_class"]["neg"]
    assert document["metrics"]["recall"] == pytest.approx(per_class["recall"], abs=1e-6)
    run_cli(["evaluate", recipe, "--run-dir", run_dir, "-q"])  # back to the run's own recipe for later tests
