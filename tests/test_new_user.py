"""Issue 33, what a newcomer met: predict keeps the user's columns, baselines are scored on content, a model
that learnt nothing is called out, several references count, the figures say which model they are of, and
the wording (plain-text baselines, resumed sweep trials, `plan` on stdout) says what happened."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest


# ------------------------------------------------------------------ figures and warnings
def test_bootstrap_figures_are_scikit_learns_and_a_real_gain_is_beyond_noise():
    """The vectorised resampling computes exactly scikit-learn's metrics; a perfect model clears the majority
    class beyond noise, a copy of the baseline does not; a collapsed model is called out by name."""
    import numpy as np
    from sklearn.metrics import (
        f1_score,
        matthews_corrcoef,
        precision_score,
        recall_score,
    )

    from adaptctl.evaluation import diagnosis, significance

    rng = np.random.default_rng(0)
    gold, predicted = rng.integers(0, 3, 300).tolist(), rng.integers(0, 3, 300).tolist()
    for average in ("macro", "micro", "weighted"):
        found = significance.classification_resampled(
            {"gold": gold, "predicted": predicted, "classes": 3, "average": average, "positive": None}, None)
        assert found["f1"] == pytest.approx(f1_score(gold, predicted, average=average, zero_division=0))
        assert found["precision"] == pytest.approx(precision_score(gold, predicted, average=average, zero_division=0))
        assert found["recall"] == pytest.approx(recall_score(gold, predicted, average=average, zero_division=0))
    assert found["mcc"] == pytest.approx(matthews_corrcoef(gold, predicted))
    binary = [g % 2 for g in gold]

    def result(pred):
        return {"classification": {"gold": binary, "predicted": pred, "classes": 2, "average": "binary", "positive": 1}}

    majority = [0] * len(binary)
    gains = significance.paired_differences(result(binary), result(majority), ["accuracy", "f1"], seed=1)
    assert gains["accuracy"]["beyond_noise"] and gains["f1"]["difference"] == pytest.approx(1.0)
    same = significance.paired_differences(result(majority), result(majority), ["accuracy"], seed=1)
    assert same["accuracy"] == {"difference": 0.0, "ci95": [0.0, 0.0], "beyond_noise": False, "worse_beyond_noise": False}
    assert diagnosis.not_better(same)
    assert diagnosis.collapsed_class(result(majority), ["ham", "spam"]) == "ham"
    assert diagnosis.collapsed_class(result(binary), ["ham", "spam"]) is None


def test_the_warnings_name_the_likely_causes():
    from adaptctl.evaluation.diagnosis import TrainingFacts, warnings

    facts = TrainingFacts(steps=38, learning_rate=2e-4, learning_rate_from="lora's default",
                          label_shares={"ham": 0.866, "spam": 0.134})
    not_better = {"f1": {"difference": 0.0, "ci95": [0.0, 0.0], "beyond_noise": False}}
    collapsed, none_better = warnings("ham", not_better, "majority-class", 1116, facts)
    assert collapsed.startswith("the model predicts one class, `ham`, for every one of the 1116 examples")
    assert "class imbalance (the train split is 87% `ham`): set train.class_weights: auto" in collapsed
    assert "too few steps (38 optimizer steps)" in collapsed and "the learning rate (0.0002, lora's default)" in collapsed
    assert none_better.startswith("the model does not beat its baseline (majority-class) beyond noise on any metric: "
                                  "f1 +0.0000 (95% CI +0.0000 to +0.0000)")
    weighted = TrainingFacts(steps=38, label_shares={"ham": 0.866, "spam": 0.134}, class_weights=True)
    assert "class imbalance" not in warnings("ham", {}, None, 10, weighted)[0]
    better = {"f1": {**not_better["f1"], "beyond_noise": True}}
    assert warnings(None, better, "majority-class", 10, facts) == []
    # better on f1, and worse beyond noise on accuracy (below always saying `ham`): said, with the causes
    worse = {"difference": -0.21, "ci95": [-0.275, -0.1475], "beyond_noise": False, "worse_beyond_noise": True}
    mixed = warnings(None, {**better, "accuracy": worse}, "majority-class", 10, facts)
    assert mixed[0].startswith("the model is worse than its baseline (majority-class) beyond noise on accuracy -0.2100 "
                               "(95% CI -0.2750 to -0.1475); likely causes: class imbalance")


def test_answers_are_counted_per_model_and_a_fallback_tells_format_from_content():
    """33.2: a bare, correct "20" is unmatched by the pattern and wrong for exact_match, right for
    exact_match_fallback (the last number), and counted as such; non-numeric references get no fallback."""
    from adaptctl.evaluation.metrics import answer_metrics

    predictions = ["so it is 20", "#### 20", "I think 3 then 7", "no idea"]
    references = [["#### 20"], ["#### 20"], ["#### 7"], ["#### 4"]]
    metrics, rows, per_example = answer_metrics(predictions, references, r"####\s*(-?[\d.,]+)", "auto")
    assert metrics["exact_match"] == 25 and metrics["exact_match_fallback"] == 75 and metrics["unmatched"] == 3
    assert metrics["fallback_found"] == 2 and [r["fallback_answer"] for r in rows] == ["20", "20", "7", None]
    assert per_example["exact_match_fallback"] == [100, 100, 100, 0]
    words, _, _ = answer_metrics(["#### Paris"], [["#### Paris"]], r"####\s*(\w+)", "auto")
    assert "exact_match_fallback" not in words


def test_a_list_of_references_is_scored_whole(tmp_path):
    """33.4: `response: '{{ tldrs[0] }}'` trains on the first and keeps every item as a reference; an explicit
    data.references column does the same; ROUGE takes the best of them."""
    from datasets import Dataset
    from tiny_generation import load, recipe_dict

    from adaptctl.evaluation.metrics import generation_metrics
    from adaptctl.tasks import causal_lm

    ds = Dataset.from_list([{"q": "text one", "tldrs": ["a cat sat", "the cat sat down", ""]},
                            {"q": "text two", "tldrs": ["dogs run"]}])
    recipe = recipe_dict(tmp_path / "m", tmp_path / "d.jsonl")
    recipe["data"].update(prompt="{q}", response="{{ tldrs[0] }}")
    mapped, _ = causal_lm.canonicalize(ds, load(recipe), "d.jsonl")
    assert mapped["response"] == ["a cat sat", "dogs run"]
    assert mapped["references"] == [["a cat sat", "the cat sat down"], ["dogs run"]]
    recipe["data"].update(response="{q}", references="tldrs")
    assert causal_lm.canonicalize(ds, load(recipe), "d.jsonl")[0]["references"] == mapped["references"]
    both = generation_metrics(["the cat sat down"], [["a cat sat", "the cat sat down"]])
    assert both["rougeL"] == pytest.approx(1.0)
    assert generation_metrics(["the cat sat down"], [["a cat sat"]])["rougeL"] < 0.9


def test_sweep_names_resumed_trials_by_their_directory_and_says_when_the_best_is_tied(tmp_path):
    """33.3 and 33.8: a tie within the best trial's bootstrap interval is said; a resumed trial is named by
    its directory, with Optuna's number beside it."""
    import optuna

    from adaptctl.sweep import results
    from adaptctl.sweep.study import RESUMES, shown

    study = optuna.create_study(direction="maximize")
    for number, value in enumerate([0.80, 0.79, 0.60]):
        study.enqueue_trial({}, user_attrs={"run_dir": f"trials/{number}"})
        study.optimize(lambda trial, v=value: v, n_trials=1)
    evaluated = tmp_path / "trials" / "0" / "evaluate"
    evaluated.mkdir(parents=True)
    (evaluated / "metrics.json").write_text(json.dumps({"intervals": {"accuracy": [0.75, 0.85]}}))
    winner = study.best_trial
    tied, interval = results.tied_with_best(study, winner, "accuracy", tmp_path)
    assert [t.number for t in tied] == [1] and interval == [0.75, 0.85]
    assert "tied within noise: trial 1 (0.79)" in results.tie_sentence(study, winner, "accuracy", tmp_path)
    (evaluated / "metrics.json").write_text(json.dumps({"intervals": {"accuracy": [0.795, 0.805]}}))
    assert results.tie_sentence(study, winner, "accuracy", tmp_path) == ""
    study.enqueue_trial({}, user_attrs={RESUMES: 2})
    study.optimize(lambda trial: 0.5, n_trials=1)
    assert shown(study.trials[-1]) == "trial 2 (resumed; Optuna trial 3)" and shown(study.trials[0]) == "trial 0"


def test_plan_prints_the_plan_on_stdout(run_cli, tmp_path, monkeypatch):
    """33.8: without --json the plan is the command's output (stdout); with it, one JSON object there."""
    import adaptctl.plan

    plan = {"parameters": {"trainable": 10, "total": 100}, "device": "cpu", "worst_batch_tokens": 64,
            "memory_mb": {"peak": 50.0, "weights": 1.0, "gradients": 1.0, "optimizer": 2.0, "activations": 3.0},
            "steps": 12, "train_rows": 96, "tokens": 900, "seconds_per_step": 0.5, "measured_steps": 2,
            "estimated_train_seconds": 6.0, "fits": True}
    monkeypatch.setattr(adaptctl.plan, "make_plan", lambda ctx, steps, say=True: plan)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: p\ntask: classification\nmodel: {base: m}\ndata: {source: d.csv, text: t, label: l}\n"
                      "method: {name: lora}\n")
    code, out, _ = run_cli(["plan", recipe])
    assert code == 0 and "plan: 10 of 100 parameters trainable" in out and "optimizer steps" in out
    code, out, _ = run_cli(["plan", recipe, "--json"])
    assert code == 0 and json.loads(out)["steps"] == 12


# ------------------------------------------------------------------ generation: answers and progress
def test_predict_extracts_the_answer_and_reports_progress_within_a_batch(tmp_path, run_cli, monkeypatch):
    """33.2 and 33.6: predict puts evaluate.answer_pattern's answer beside the text, and a batch that generates
    for long says how far it is, token by token (at most every ADAPTCTL_PROGRESS_SECONDS)."""
    import tiny_generation as tg

    model = tg.save_tiny_llama(tmp_path / "llama")
    recipe = tg.recipe_dict(model, tg.write_pairs(tmp_path / "pairs.jsonl"), method="full",
                            evaluate={"answer_pattern": r"(\w+)"}, train={"max_steps": 1})
    path = tg.write_recipe(tmp_path / "recipe.yaml", recipe)
    assert run_cli(["run", path, "--run-dir", tmp_path / "run", "--stages", "prepare,train", "-q"])[0] == 0
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": 1, "question": "apple river stone", "answer": "mine"}) + "\n")
    monkeypatch.setenv("ADAPTCTL_PROGRESS_SECONDS", "0")
    code, out, err = run_cli(["predict", tmp_path / "run", "--input", tmp_path / "in.jsonl"])
    assert code == 0, err
    line = json.loads(out)
    assert line["answer"] == "mine" and line["id"] == 1 and line["question"] == "apple river stone"
    first_word = re.search(r"(\w+)", line["prediction"])
    assert line["predicted_answer"] == (first_word.group(1) if first_word else None)
    assert "generate: 0/1 token 1/8 of a batch of 1" in err


# ------------------------------------------------------------------ mean pooling (export: tests/test_export.py)
def test_mean_pooling_is_chosen_for_sentence_transformers_bert_bases(tmp_path):
    """33.7: auto reads the folder: a BERT with sentence-transformers' 1_Pooling (mean) gets mean pooling, any
    other base the [CLS] pooler; mean on another architecture is refused at model.pooling."""
    from types import SimpleNamespace

    from adaptctl.core.errors import UserError
    from adaptctl.tasks.pooling import choose

    def recipe(pooling):
        return SimpleNamespace(model=SimpleNamespace(pooling=pooling, base="m"))

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert choose(recipe("auto"), tmp_path)[0] == "cls"
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    chosen, why = choose(recipe("auto"), tmp_path)
    assert chosen == "mean" and why == "the base is a sentence-transformers model trained for mean pooling (1_Pooling/config.json)"
    assert choose(recipe("cls"), tmp_path)[0] == "cls"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    assert choose(recipe("auto"), tmp_path)[0] == "cls"
    with pytest.raises(UserError, match="model.pooling: mean pooling is built for bert models"):
        choose(recipe("mean"), tmp_path)


def test_classification_lora_defaults_are_the_measured_ones():
    """33.7: a LoRA classifier with no target_modules and no learning rate adapts every linear layer at 1e-3
    (bench/RESULTS-defaults.md); other tasks keep peft's table and 2e-4; a recipe's own values win."""
    from adaptctl.methods import learning_rate, learning_rate_source
    from adaptctl.methods.lora import target_modules
    from adaptctl.recipe.schema import Recipe

    def recipe(task: str, **train):
        data = {"source": "d.csv", "text": "t", "label": "l"} if task == "classification" else \
            {"source": "d.csv", "prompt": "p", "response": "r"}
        return Recipe.model_validate({"name": "d", "task": task, "model": {"base": "m"}, "data": data,
                                      "method": {"name": "lora"}, "train": train})

    classifier, generator = recipe("classification"), recipe("causal-lm")
    assert learning_rate(classifier) == 1e-3 and learning_rate_source(classifier) == "lora's default for classification"
    assert target_modules(classifier.method, "SEQ_CLS") == "all-linear" and target_modules(generator.method, "CAUSAL_LM") is None
    assert learning_rate(generator) == 2e-4 and learning_rate_source(generator) == "lora's default"
    given = recipe("classification", learning_rate=5e-4)
    assert learning_rate(given) == 5e-4 and learning_rate_source(given) == "train.learning_rate"


def test_an_unknown_auto_map_is_still_refused(tmp_path):
    """Only adaptctl's own mean_pooling.py, byte for byte, passes check_loadable without trust_remote_code."""
    from adaptctl.core.errors import UserError
    from adaptctl.models.loading import check_loadable

    own = Path(__file__).resolve().parents[1] / "adaptctl" / "models" / "mean_pooling.py"
    (tmp_path / "config.json").write_text(json.dumps({"auto_map": {"AutoConfig": "mean_pooling.BertMeanPoolingConfig"}}))
    (tmp_path / "mean_pooling.py").write_bytes(own.read_bytes())
    check_loadable(tmp_path)  # adaptctl's own file: adaptctl loads its registered class, never this copy
    (tmp_path / "mean_pooling.py").write_text(own.read_text() + "\nimport os  # changed\n")
    with pytest.raises(UserError, match="needs its own code to load"):
        check_loadable(tmp_path)
