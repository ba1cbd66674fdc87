"""Prompting without training: few-shot prompts, label scoring by likelihood
(on fixed logits, then end to end), and classification by prompting through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset

import tiny_generation as tg
from adaptctl.core.errors import UserError
from adaptctl.tasks import prompting


@pytest.fixture(scope="module")
def tokenizer():
    return tg.smol_tokenizer()


def _train(n=20):
    return Dataset.from_dict({"prompt": [f"Q{i}: " for i in range(n)], "response": [f"A{i}" for i in range(n)]})


def _classification_recipe(prompt=None, chat=False, few_shot=0):
    recipe = tg.recipe_dict(Path("m"), Path("d.csv"), task="classification", method="prompting")
    recipe["data"] = {"source": "d.csv", "text": "text", "label": "label", "prompt": prompt, "chat_template": chat}
    recipe["evaluate"]["few_shot"] = few_shot
    return tg.load(recipe)


# ------------------------------------------------------------------ few-shot
def test_shots_are_deterministic_distinct_and_seeded():
    first, again = prompting.draw_shots(_train(), 4, seed=1), prompting.draw_shots(_train(), 4, seed=1)
    assert first == again and len(set(first)) == 4
    assert all(a == f"A{p[1:-2]}" for p, a in first)  # pairs stay pairs
    assert prompting.draw_shots(_train(), 4, seed=2) != first
    assert prompting.draw_shots(_train(3), 5, seed=1) and len(prompting.draw_shots(_train(3), 5, seed=1)) == 3
    assert prompting.draw_shots(None, 2, seed=1) == [] and prompting.draw_shots(_train(), 0, seed=1) == []


def test_plain_and_chat_few_shot_layouts(tokenizer):
    shots = [("Q1: ", "A1"), ("Q2: ", "A2")]
    assert prompting.plain_prompt(shots, "Q3: ") == "Q1: A1\n\nQ2: A2\n\nQ3: "
    messages = prompting.chat_messages(shots, "Q3")
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    text = prompting.chat_prompt(tokenizer, shots, "Q3")
    assert text.index("Q1") < text.index("A1") < text.index("Q3") and text.endswith("<|im_start|>assistant\n")


# ------------------------------------------------------------------ scoring
def test_continuation_logprob_on_fixed_logits():
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    ids = torch.tensor([0, 2, 0, 1])
    # tokens 1..2 (ids 2, 0) are predicted by the logits at positions 0 and 1
    expected = (2.0 - math.log(1 + math.e + math.e ** 2)) + (3.0 - math.log(math.e ** 3 + 2))
    assert prompting.continuation_logprob(logits, ids, start=1, length=2) == pytest.approx(expected)
    assert prompting.continuation_logprob(logits, ids, start=3, length=1) == pytest.approx(-math.log(3))


def test_pick_labels_takes_the_most_likely_and_normalises():
    predicted, probabilities = prompting.pick_labels([[-1.0, -3.0], [-5.0, -0.5]])
    assert predicted == [0, 1]
    assert probabilities[0][0] == pytest.approx(1 / (1 + math.exp(-2))) and sum(probabilities[1]) == pytest.approx(1)


class FavouringLM(torch.nn.Module):
    """A stand-in causal LM whose next-token distribution always favours `favoured` token ids."""

    def __init__(self, vocab: int, favoured: list[int]):
        super().__init__()
        self.vocab, self.favoured = vocab, favoured

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.favoured] = 8.0
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("labels", [["ham", "spam"], ["not spam at all", "spam"]])
def test_classify_by_likelihood_picks_the_favoured_label(tokenizer, labels):
    """One-token labels take the one-forward path; multi-token labels score every pair."""
    recipe = _classification_recipe(prompt="Message: {text}\nSpam or ham? Answer:")
    label2id = {name: i for i, name in enumerate(labels)}
    winner = labels[1]
    model = FavouringLM(len(tokenizer), tokenizer(" " + winner, add_special_tokens=False)["input_ids"])
    split = Dataset.from_dict({"text": ["win a prize now", "see you at lunch"], "label": [labels[1], labels[0]]})
    result = prompting.classify_by_likelihood(model, tokenizer, split, recipe, label2id)
    assert [p["prediction"] for p in result.predictions] == [winner, winner]
    assert result.metrics["accuracy"] == 0.5 and set(result.metrics) >= {"precision", "recall", "f1", "mcc"}
    assert result.predictions[0]["probabilities"][winner] > 0.99
    assert result.extras["confusion_matrix"] == [[0, 1], [0, 1]]


def test_classification_prompt_names_the_allowed_placeholders():
    assert prompting.render_classification_prompt("{text} ({labels})?", "hi", ["a", "b"]) == "hi (a, b)?"
    with pytest.raises(UserError) as error:
        prompting.render_classification_prompt("Message: {message}", "hi", ["a", "b"])
    assert "data.prompt" in error.value.message and "{text}" in error.value.hint
    assert prompting.render_classification_prompt("{{ text | upper }} ({{ labels }})?", "hi", ["a", "b"]) == "HI (a, b)?"
    with pytest.raises(UserError, match="data.prompt: .*UndefinedError"):
        prompting.render_classification_prompt("{{ message }}", "hi", ["a", "b"])


def test_few_shot_classification_context_holds_labelled_examples(tokenizer):
    recipe = _classification_recipe(prompt="Text: {text}\nLabel:", few_shot=2)
    train = Dataset.from_dict({"text": ["t1", "t2", "t3"], "label": ["a", "b", "a"]})
    shots = prompting.draw_shots(train, 2, recipe.seed, columns=("text", "label"))
    contexts, continuations = prompting._contexts(["new"], ["a", "b"], recipe, tokenizer, shots)
    assert contexts[0] == "".join(f"Text: {t}\nLabel: {a}\n\n" for t, a in shots) + "Text: new\nLabel:"
    assert continuations == [" a", " b"]


# ----------------------------------------------------------------- pipeline
def test_classification_by_prompting_through_the_cli(run_cli, tmp_path):
    model = tg.save_tiny_llama(tmp_path / "tiny-llama")
    data = tmp_path / "sms.csv"
    data.write_text("text,label\n" + "".join(f"free prize {i} now,spam\nlunch at {i}?,ham\n" for i in range(20)))
    recipe = tg.recipe_dict(model, data, task="classification", method="prompting")
    recipe["data"] = {"source": str(data), "text": "text", "label": "label", "splits": {"validation": 0.1, "test": 0.3},
                      "prompt": "Message: {text}\nIs it {labels}? Answer:"}
    recipe["evaluate"] = {"few_shot": 2, "batch_size": 8}
    path = tg.write_recipe(tmp_path / "recipe.yaml", recipe)
    code, out, err = run_cli(["run", path, "--run-dir", tmp_path / "run", "--json"])
    assert code == 0, err
    document = json.loads((tmp_path / "run" / "evaluate" / "metrics.json").read_text())
    assert {"accuracy", "f1"} <= set(document["metrics"]) and document["num_examples"] == 12
    rows = [json.loads(line) for line in (tmp_path / "run" / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    assert set(rows[0]["probabilities"]) == {"ham", "spam"} and sum(rows[0]["probabilities"].values()) == pytest.approx(1)


@pytest.mark.slow
def test_smollm2_tells_obvious_sentiment_apart(tokenizer):
    from transformers import AutoModelForCausalLM

    texts = ["I loved this movie, it was wonderful and moving.", "Terrible film. Boring, badly acted, a waste of time.",
             "An absolute delight from start to finish!", "I hated every minute of it.",
             "Brilliant performances and a beautiful story.", "The worst movie I have seen this year."]
    split = Dataset.from_dict({"text": texts, "label": ["positive", "negative"] * 3})
    recipe = _classification_recipe(prompt="Review: {text}\nIs this review positive or negative? Answer:", chat=True)
    model = AutoModelForCausalLM.from_pretrained(str(tg.smol_path())).eval()
    result = prompting.classify_by_likelihood(model, tokenizer, split, recipe, {"negative": 0, "positive": 1})
    assert result.metrics["accuracy"] >= 5 / 6
