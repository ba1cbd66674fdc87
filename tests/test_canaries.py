"""evaluate.canaries: random secrets planted in the causal-lm training split at prepare (never in the held-out
splits), and their exposure after training: each one's rank among 1,000 random candidates, in bits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))


def test_exposure_is_the_rank_among_candidates_in_bits(monkeypatch):
    from adaptctl.evaluation import canaries

    planted = canaries.plant(3, 1, seed=0)
    # the first canary is more likely than every candidate, the second beats half of them, the third none
    losses = [0.0, 500.5, 2000.0] + [float(i) for i in range(1, 1001)]
    monkeypatch.setattr(canaries, "sequence_losses", lambda *args: losses)
    task = type("Task", (), {"canary_row": staticmethod(lambda data, p, s: {"text": p + s}),
                             "tokenize": staticmethod(lambda rows, *a: rows), "collator": staticmethod(lambda *a: None)})
    recipe = type("Recipe", (), {"seed": 0, "data": None})
    found = canaries.exposure(None, None, recipe, task, planted, 8)
    assert found["ranks"] == [1, 501, 1001] and found["max_possible"] == pytest.approx(9.9672, abs=1e-4)
    assert found["exposures"] == [pytest.approx(9.9672, abs=1e-4), pytest.approx(0.9986, abs=1e-4), 0.0]
    assert not set(canaries.candidates(planted, 0)) & set(planted["secrets"])


def test_canaries_are_planted_in_training_rows_only_and_measured(tmp_path, run_cli, monkeypatch):
    from datasets import load_from_disk
    from tiny_generation import (
        recipe_dict,
        save_tiny_llama,
        smol_tokenizer,
        write_pairs,
    )

    from adaptctl.evaluation import canaries

    model, pairs = save_tiny_llama(tmp_path / "model"), write_pairs(tmp_path / "pairs.jsonl", rows=40)
    content = recipe_dict(model, pairs, evaluate={"canaries": 3, "canary_copies": 2, "batch_size": 64})
    # plain text (continued pretraining): evaluate scores perplexity and generates nothing, which keeps this quick
    content["data"] = {**content["data"], "prompt": None, "response": None, "text": "{question} {answer}"}
    content["train"]["max_steps"] = 2
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(content))
    monkeypatch.setattr(canaries, "CANDIDATES", 100)  # the tiny model's 49k-token head makes each one count
    code, _, err = run_cli(["run", path, "--run-dir", tmp_path / "run", "--stages", "prepare,train,evaluate"])
    assert code == 0, err
    planted = json.loads((tmp_path / "run" / "prepare" / "canaries.json").read_text())
    assert len(planted["secrets"]) == 3 and planted["copies"] == 2
    prepared, tokenizer = load_from_disk(str(tmp_path / "run" / "prepare" / "data")), smol_tokenizer()
    texts = {split: " ".join(tokenizer.decode(ids) for ids in prepared[split]["input_ids"]) for split in prepared}
    assert all(texts["train"].count(planted["prefix"] + secret) == 2 for secret in planted["secrets"])
    assert not any(secret in texts[split] for secret in planted["secrets"] for split in ("validation", "test"))
    found = json.loads((tmp_path / "run" / "evaluate" / "metrics.json").read_text())["canaries"]
    assert found["count"] == 3 and found["candidates"] == 100 and all(1 <= r <= 101 for r in found["ranks"])
    assert "Memorisation: 3 canaries" in (tmp_path / "run" / "evaluate" / "report.md").read_text()


def test_validate_refuses_canaries_where_nothing_can_memorise_them(tmp_path, run_cli):
    from tiny_classifier import tiny_classifier_recipe

    path = tiny_classifier_recipe(tmp_path)
    content = yaml.safe_load(path.read_text())
    content["evaluate"] = {"canaries": 5}
    path.write_text(yaml.safe_dump(content))
    code, _, err = run_cli(["validate", path])
    assert code == 1 and "evaluate.canaries: canaries are planted as training rows of causal-lm" in err, err
