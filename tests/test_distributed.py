"""Two processes with gloo on the CPU train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _tiny_model(folder: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from adaptctl.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, num_labels=2)
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _recipe(tmp: Path, model: Path, batch_size: int) -> Path:
    rows = ["text,label"] + [f"great happy lovely day number {i},pos" if i % 2 else f"awful sad broken thing {i},neg"
                             for i in range(96)]
    (tmp / "data.csv").write_text("\n".join(rows) + "\n")
    recipe = tmp / f"recipe-{batch_size}.yaml"
    recipe.write_text(f"""
name: dist
task: classification
model: {{base: {model}}}
data: {{source: data.csv, text: text, label: label, splits: {{validation: 0.25, test: 0.0}}, max_length: 32}}
method: {{name: full}}
train: {{epochs: 3, batch_size: {batch_size}, learning_rate: 1.0e-3, precision: fp32, logging_steps: 1}}
""")
    return recipe


def _train(recipe: Path, run_dir: Path, nproc: int):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "adaptctl", "train", str(recipe), "--run-dir", str(run_dir), "--nproc", str(nproc)]
    subprocess.run([sys.executable, "-m", "adaptctl", "prepare", str(recipe), "--run-dir", str(run_dir)], check=True, env=env)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "train" / "manifest.json").read_text())


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    model = _tiny_model(tmp_path / "model")
    one = _train(_recipe(tmp_path, model, 8), tmp_path / "one", 1)
    two = _train(_recipe(tmp_path, model, 4), tmp_path / "two", 2)
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["global_batch_size"] == one["global_batch_size"] == 8
    assert two["steps"] == one["steps"]
    # Same global batch, same number of steps: the losses agree (the data order differs between samplers).
    assert two["metrics"]["eval_loss"] == pytest.approx(one["metrics"]["eval_loss"], rel=0.05)
    rows = [json.loads(line) for line in (tmp_path / "two" / "train" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if "loss" in r]
    assert len(train_steps) == len(set(train_steps)), "each step is logged once, by rank 0"
    assert not list((tmp_path / "two" / "train").glob(".model.tmp*"))
    assert (tmp_path / "two" / "train" / "model" / "model.safetensors").exists()


def test_dpo_trains_under_two_processes(tmp_path):
    """Preference alignment goes through the Trainer's distributed path like every task: two gloo processes,
    global batch 2 x 4, one adapter written once by rank 0, held-out DPO loss finite and the log not doubled."""
    import math

    import tiny_generation as tg
    from test_preference import pair_recipe, write_pairs

    llama = tg.save_tiny_llama(tmp_path / "llama")
    raw = pair_recipe(llama, write_pairs(tmp_path / "pairs.jsonl"))
    raw["train"].update(batch_size=4, max_steps=4)
    manifest = _train(tg.write_recipe(tmp_path / "dpo.yaml", raw), tmp_path / "run", 2)
    assert manifest["world_size"] == 2 and manifest["global_batch_size"] == 8 and manifest["steps"] == 4
    assert math.isfinite(manifest["metrics"]["eval_loss"])
    assert (tmp_path / "run" / "train" / "model" / "adapter_model.safetensors").is_file()
    rows = [json.loads(line) for line in (tmp_path / "run" / "train" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert len(steps) == len(set(steps)), "each step is logged once, by rank 0"


def test_grpo_trains_under_two_processes(tmp_path):
    """GRPO goes through the same distributed path: two gloo processes each sample completions for their
    share of the prompts (a group's completions may span both), rewards are gathered before the advantages,
    one adapter is written once by rank 0, and the log is not doubled."""
    import tiny_generation as tg
    from test_reinforcement import REWARD_CODE, grpo_recipe, sums

    llama = tg.save_tiny_llama(tmp_path / "llama")
    (tmp_path / "my_rewards.py").write_text(REWARD_CODE)
    raw = grpo_recipe(llama, sums(tmp_path / "sums.jsonl"), tmp_path / "my_rewards.py")
    raw["train"].update(batch_size=2, save_every=None)
    manifest = _train(tg.write_recipe(tmp_path / "grpo.yaml", raw), tmp_path / "run", 2)
    assert manifest["world_size"] == 2 and manifest["global_batch_size"] == 4 and manifest["steps"] == 2
    assert manifest["generated_tokens"] > 0 and manifest["rewards"][3]["name"] == "digits"
    assert (tmp_path / "run" / "train" / "model" / "adapter_model.safetensors").is_file()
    rows = [json.loads(line) for line in (tmp_path / "run" / "train" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == [1, 2] and all("rewards/answer_match/mean" in r for r in rows if "loss" in r)
