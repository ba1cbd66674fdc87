"""Real run: multi-turn SFT of SmolLM2-135M-Instruct with LoRA on conversations built from DialogSum
dialogues ("#Person1#:" lines become user turns, "#Person2#:" lines assistant turns, under one system
turn), trained on every assistant turn.  Checks that the held-out loss of the assistant tokens (every
reply of the test conversations) falls below the base model's on the same tokens.

Small for 2 shared CPU cores: 200 training conversations (96 of them seen: 12 steps of 8, 160 tokens),
16 test conversations.  Measured (2026-12-04, seed 42, 459 s on a contended 2-core CPU): 2,062 turns,
10,427 trained and 19,878 untrained tokens in training; held-out assistant-token loss 3.0549 adapted
against 3.6358 for the base model.
"""

from __future__ import annotations

import json
import re

import pytest

from real_runs import run_recipe

SYSTEM = "You are #Person2#. Reply to #Person1# in the conversation."
SPEAKER = re.compile(r"^#Person(\d)#:\s*(.*)$")


def dialogue_messages(dialogue: str) -> list[dict] | None:
    """A DialogSum dialogue as chat messages (consecutive lines of one speaker joined), or None when
    it has another speaker, or no reply of #Person2# after a line of #Person1#."""
    messages = [{"role": "system", "content": SYSTEM}]
    for line in dialogue.splitlines():
        found = SPEAKER.match(line.strip())
        if not found or found.group(1) not in "12":
            return None
        role = "user" if found.group(1) == "1" else "assistant"
        if messages[-1]["role"] == role:
            messages[-1]["content"] += "\n" + found.group(2)
        else:
            messages.append({"role": role, "content": found.group(2)})
    if messages[1:2] and messages[1]["role"] != "user":
        return None
    return messages if any(m["role"] == "assistant" for m in messages) else None


def write_conversations(source, path, rows: int) -> int:
    written = 0
    with open(source) as lines, open(path, "w") as out:
        for line in lines:
            messages = dialogue_messages(json.loads(line)["dialogue"])
            if messages and written < rows:
                out.write(json.dumps({"messages": messages}) + "\n")
                written += 1
    return written


def test_dialogue_lines_become_alternating_turns():
    got = dialogue_messages("#Person1#: Hi.\n#Person2#: Hello.\n#Person2#: Sit down.\n#Person1#: Thanks.")
    assert [m["role"] for m in got] == ["system", "user", "assistant", "user"]
    assert got[2]["content"] == "Hello.\nSit down."
    assert dialogue_messages("#Person3#: Hi.\n#Person2#: Hello.") is None


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a guard against a hang
def test_multi_turn_sft_lowers_the_held_out_assistant_loss(shared_data, tmp_path, run_cli):
    train = tmp_path / "train.jsonl"
    test = tmp_path / "test.jsonl"
    assert write_conversations(shared_data / "dialogsum" / "dialogsum.dev.jsonl", train, 200) == 200
    assert write_conversations(shared_data / "dialogsum" / "dialogsum.test.jsonl", test, 16) == 16
    recipe = {
        "name": "dialogsum-chat", "task": "causal-lm", "seed": 42,
        "model": {"base": "HuggingFaceTB/SmolLM2-135M-Instruct"},
        "data": {"source": str(train), "test": str(test), "messages": "messages",
                 "splits": {"validation": 0, "test": 0}, "max_length": 160},
        "method": {"name": "lora", "r": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "train": {"max_steps": 12, "batch_size": 8, "learning_rate": 2e-3, "logging_steps": 4},
        "evaluate": {"split": "test", "compare_with_base": True, "batch_size": 16,
                     "generation": {"max_new_tokens": 8}},
    }
    run = run_recipe(run_cli, recipe, tmp_path)
    stats, adapted, base, steps = run.stats, run.metrics, run.baseline, run.steps
    document = json.loads((run.run_dir / "evaluate" / "metrics.json").read_text())
    print(f"\nDialogSum conversations: train {stats['train']['rows']} ({stats['train']['turns']} turns, "
          f"{stats['train']['trained_tokens']} trained / {stats['train']['untrained_tokens']} untrained tokens), "
          f"test {stats['test']['rows']}; {steps} LoRA steps, seed 42, {run.seconds:.0f} s"
          f"\n  held-out assistant-token loss: adapted {adapted['loss']:.4f}  base {base['loss']:.4f}"
          f"\n  ROUGE-L of the last reply:     adapted {adapted['rougeL']:.4f}  base {base['rougeL']:.4f}")
    assert steps == 12 and document["num_examples"] == 16
    assert stats["train"]["turns"] > 3 * stats["train"]["rows"]  # multi-turn, not one exchange
    assert adapted["loss"] < base["loss"] - 0.05
