"""Real run: DPO of SmolLM2-135M-Instruct with LoRA on Anthropic HH-RLHF harmless pairs (whole transcripts
split at the last assistant turn, rendered with the chat template).  Checks that DPO moved the held-out
pairs the right way: the mean log-probability margin of chosen over rejected rises above the base model's
on the same pairs, and the implicit reward margin against the reference is positive; the held-out preference
accuracy must not fall below the base's.

Measured at this size (2026-12-04, seed 42, about 200 training pairs, 8 steps of 8, 155 s on a quiet 2-core
CPU): held-out accuracy 0.600 adapted and 0.600 base (a tie: 8 steps flip no held-out pair's ranking), mean
margin 25.99 vs 25.51, implicit reward margin +0.048 (reward accuracy 0.60).  With 12 steps and 57 held-out
pairs it was a tie too (0.561 each; margins 30.89 vs 30.25).  The issue's bar, accuracy above the base's,
needs more steps than a test on this CPU can pay for: with bench/recipes/hh-dpo-accuracy.yaml (640 pairs,
80 steps, 34 minutes) it is 0.61 against the base's 0.59 on 200 held-out pairs (docs/tasks/preference.md).

Small for the test suite's budget: 260 training pairs read (about 200 kept: those whose prompt fits in
max_length 192), 8 steps of 8; 48 held-out pairs read.
"""

from __future__ import annotations

import json

import pytest

from real_runs import run_recipe


def split_file(source, train, test, train_rows: int, test_rows: int):
    """The first pairs of the file, without the few that adaptctl refuses (9 of 2,312: an empty chosen
    reply, or transcripts that differ before the last reply), which would stop prepare at their line."""
    from adaptctl.data.columns import RowError
    from adaptctl.tasks.preference import split_pair

    kept = []
    for index, line in enumerate(source.read_text().splitlines()):
        try:
            split_pair(json.loads(line), index)
        except RowError:
            continue
        kept.append(line)
    train.write_text("\n".join(kept[:train_rows]) + "\n")
    test.write_text("\n".join(kept[train_rows:train_rows + test_rows]) + "\n")


def recipe(train, test, loss: str) -> dict:
    return {
        "name": f"hh-{loss}", "task": "preference", "seed": 42,
        "model": {"base": "HuggingFaceTB/SmolLM2-135M-Instruct"},
        "data": {"source": str(train), "test": str(test), "chosen": "{chosen}", "rejected": "{rejected}",
                 "chat_template": True, "splits": {"validation": 0, "test": 0}, "max_length": 192},
        "method": {"name": "lora", "r": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "preference": {"loss": loss, "beta": 0.1},
        "train": {"max_steps": 8, "batch_size": 8, "learning_rate": 1e-3, "logging_steps": 4},
        "evaluate": {"split": "test", "compare_with_base": True, "batch_size": 16,
                     "generation": {"max_new_tokens": 16}},
    }


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a guard against a hang
@pytest.mark.parametrize("loss", ["dpo"])
def test_dpo_moves_held_out_margins_past_the_base(shared_data, tmp_path, run_cli, loss):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    split_file(shared_data / "hh_rlhf_harmless" / "test.jsonl", train, test, 260, 48)
    run = run_recipe(run_cli, recipe(train, test, loss), tmp_path)
    stats, adapted, base, steps = run.stats, run.metrics, run.baseline, run.steps
    print(f"\nHH-RLHF harmless, {loss} + LoRA: train {stats['train']['rows']} pairs, test {stats['test']['rows']}; "
          f"{steps} steps of 8, seed 42, {run.seconds:.0f} s"
          f"\n  preference accuracy: adapted {adapted['preference_accuracy']:.4f}  base {base['preference_accuracy']:.4f}"
          f"\n  mean log-prob margin: adapted {adapted['mean_margin']:.4f}  base {base['mean_margin']:.4f}"
          f"\n  implicit reward: accuracy {adapted.get('reward_accuracy')}  margin {adapted.get('reward_margin')}"
          f"\n  reply tokens: adapted {adapted['reply_tokens']:.1f}  base {base['reply_tokens']:.1f}")
    assert steps == 8
    assert adapted["mean_margin"] > base["mean_margin"]
    assert adapted["reward_margin"] > 0
    assert adapted["preference_accuracy"] >= base["preference_accuracy"]
