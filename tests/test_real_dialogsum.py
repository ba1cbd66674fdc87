"""Real run: SmolLM2-135M-Instruct + LoRA on DialogSum (bench/recipes/dialogsum-lora.yaml,
made smaller with --set so it fits the test budget on 2 CPU cores).

Trains on dev-file dialogues and evaluates on test dialogues against their three
reference summaries, beside the same base model prompted zero-shot through its
chat template (compare_with_base).  Checks that adaptation lowers the loss of the
held-out reference summaries and raises ROUGE-L above the zero-shot baseline.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import PROJECT

RECIPE = PROJECT / "bench" / "recipes" / "dialogsum-lora.yaml"
SMALLER = [
    "data.max_train_samples=128",       # 16 steps of 8
    "data.max_length=320",
    "data.splits.validation=0",         # the held-out test loss (adapted vs base) is the loss check
    "evaluate.max_examples=32",
    "evaluate.generation.max_new_tokens=48",
]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a guard against a hang; uncontended it takes about 5 minutes
def test_dialogsum_lora_beats_zero_shot_prompting(shared_data, run_cli, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [arg for o in SMALLER for arg in ("--set", o)]
    start = time.monotonic()
    code, out, err = run_cli(["run", RECIPE, "--run-dir", run_dir, "--stages", "prepare,train,evaluate", "--json",
                              *overrides])
    wall = time.monotonic() - start
    assert code == 0, err
    document = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    adapted, base = document["metrics"], document["baseline"]["metrics"]
    train = json.loads((run_dir / "train" / "manifest.json").read_text())
    print(f"\nDialogSum, {document['num_examples']} test dialogues, {train['steps']} LoRA steps, {wall:.0f} s wall:"
          f"\n  response loss  adapted {adapted['loss']:.3f}  base {base['loss']:.3f}"
          f"\n  ROUGE-L        adapted {adapted['rougeL']:.4f}  zero-shot {base['rougeL']:.4f}"
          f"\n  ROUGE-1/2      adapted {adapted['rouge1']:.4f}/{adapted['rouge2']:.4f}"
          f"  zero-shot {base['rouge1']:.4f}/{base['rouge2']:.4f}"
          f"\n  BLEU/chrF      adapted {adapted['bleu']:.2f}/{adapted['chrf']:.2f}"
          f"  zero-shot {base['bleu']:.2f}/{base['chrf']:.2f}"
          f"\n  train {train['train_seconds']} s at {train['tokens_per_second']} tokens/s")
    assert document["baseline"]["kind"] == "zero-shot-prompting" and document["num_examples"] == 32
    assert adapted["loss"] < base["loss"] - 0.1  # the held-out reference summaries became more likely
    assert adapted["rougeL"] > base["rougeL"] + 0.02
    rows = [json.loads(line) for line in (run_dir / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows[0]["references"]) == 3  # summary1..3 of the test file
