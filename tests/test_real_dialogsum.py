"""Real run: SmolLM2-135M-Instruct + LoRA on DialogSum (bench/recipes/dialogsum-lora.yaml,
made smaller with --set so it fits the test budget on 2 CPU cores).

Trains on dev-file dialogues and evaluates on test dialogues against their three
reference summaries, beside the same base model prompted zero-shot through its
chat template (compare_with_base).  Checks that adaptation lowers the loss of the
held-out reference summaries and raises ROUGE-L above the zero-shot baseline.

Then distils that LoRA model into a SmolLM2 with 15 of its 30 layers
(bench/recipes/dialogsum-distill.yaml) end to end, and prints the student's
figures beside the teacher's (the issue sets no bar for them).
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import PROJECT

RECIPE = PROJECT / "bench" / "recipes" / "dialogsum-lora.yaml"
DISTILL = PROJECT / "bench" / "recipes" / "dialogsum-distill.yaml"
SMALLER = [
    "data.max_train_samples=64",        # 8 steps of 8 (16 measured ROUGE-L 0.335 against zero-shot 0.179)
    "data.max_length=320",
    "data.splits.validation=0",         # the held-out test loss (adapted vs base) is the loss check
    "evaluate.max_examples=32",
    "evaluate.generation.max_new_tokens=48",
]


@pytest.fixture(scope="module")
def lora_run(shared_data, tmp_path_factory):
    """The LoRA run, once for the module: the adapted model, and the teacher of the distillation test."""
    from adaptctl.core import console
    from adaptctl.cli import main

    run_dir = tmp_path_factory.mktemp("dialogsum") / "run"
    start = time.monotonic()
    code = main(["run", str(RECIPE), "--run-dir", str(run_dir), "--stages", "prepare,train,evaluate",
                 *(arg for o in SMALLER for arg in ("--set", o))])
    console.set_quiet(False)
    assert code == 0, "the LoRA run failed: see the captured stderr"
    return run_dir, time.monotonic() - start


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a guard against a hang; uncontended it takes about 3 minutes
def test_dialogsum_lora_beats_zero_shot_prompting(lora_run):
    run_dir, wall = lora_run
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


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the module's LoRA run, when this test is the first to need it; predict itself ~10 s
def test_predict_on_test_dialogues_reproduces_evaluate(lora_run, shared_data, run_cli, tmp_path):
    """Raw DialogSum rows (`fname`, `dialogue`) through `adaptctl predict RUN_DIR`: the recipe's prompt and
    chat template, max_length and 48 new tokens, greedy, give evaluate's predictions exactly.

    The rows are evaluate's first generation batch (the 8 shortest prompts of 32): predicted together,
    they make the same padded bf16 batch, so the equality is bit for bit, not within a tolerance; and
    no prompt of theirs was cut (evaluate cuts a long prompt to leave room for its reference)."""
    from datasets import load_from_disk

    run_dir, _ = lora_run
    evaluated = [json.loads(line) for line in (run_dir / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    test = load_from_disk(str(run_dir / "prepare" / "data"))["test"].select(range(len(evaluated)))
    batch = sorted(range(len(test)), key=lambda i: test[i]["prompt_length"])[:8]
    assert not any(test[i]["truncated"] for i in batch)
    lines = (shared_data / "dialogsum" / "dialogsum.test.jsonl").read_text().splitlines()
    dialogues = {row["dialogue"]: row for row in map(json.loads, lines)}
    wanted = sorted(batch)  # in the file's order, as evaluate met them
    rows = [next(r for d, r in dialogues.items() if d in evaluated[i]["input"]) for i in wanted]
    inputs = tmp_path / "rows.jsonl"
    inputs.write_text("".join(json.dumps({"fname": r["fname"], "dialogue": r["dialogue"]}) + "\n" for r in rows))
    start = time.monotonic()
    code, out, err = run_cli(["predict", run_dir, "--input", inputs])
    assert code == 0, err
    predicted = [json.loads(line) for line in out.splitlines()]
    print(f"\npredict: {len(rows)} DialogSum rows in {time.monotonic() - start:.1f} s")
    assert [p["fname"] for p in predicted] == [r["fname"] for r in rows]
    assert [p["input"] for p in predicted] == [evaluated[i]["input"] for i in wanted]
    assert [p["prediction"] for p in predicted] == [evaluated[i]["prediction"] for i in wanted]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # uncontended about 3 minutes
def test_dialogsum_lora_model_distils_into_a_shallower_smollm2(lora_run, run_cli, tmp_path):
    from safetensors.torch import load_file

    teacher_dir, _ = lora_run
    run_dir = tmp_path / "student"
    # 128 dialogues (16 steps) for the student, and the summaries cut at 24 tokens: ROUGE is printed, not checked
    overrides = [*SMALLER, "data.max_train_samples=128", "evaluate.generation.max_new_tokens=24",
                 f"distill.teacher={teacher_dir}", "train.epochs=1"]
    start = time.monotonic()
    code, _, err = run_cli(["run", DISTILL, "--run-dir", run_dir, "--stages", "prepare,distill,evaluate",
                            *(arg for o in overrides for arg in ("--set", o))])
    wall = time.monotonic() - start
    assert code == 0, err
    manifest = json.loads((run_dir / "distill" / "manifest.json").read_text())
    document = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    student, teacher = document["metrics"], document["teacher"]
    print(f"\nDialogSum distillation, {document['num_examples']} test dialogues, {manifest['steps']} steps, {wall:.0f} s wall:"
          f"\n  parameters     student {manifest['student_parameters']:,}  teacher {manifest['teacher_parameters']:,}"
          f"\n  response loss  student {student['loss']:.3f}  teacher {teacher['metrics']['loss']:.3f}"
          f"\n  ROUGE-L        student {student['rougeL']:.4f}  teacher {teacher['metrics']['rougeL']:.4f}"
          f"\n  BLEU/chrF      student {student['bleu']:.2f}/{student['chrf']:.2f}"
          f"  teacher {teacher['metrics']['bleu']:.2f}/{teacher['metrics']['chrf']:.2f}"
          f"\n  retained       {teacher['retained_percent']}"
          f"\n  examples/s     student {document['examples_per_second']:.2f}  teacher {teacher['examples_per_second']:.2f}"
          f"\n  distill {manifest['train_seconds']} s at {manifest['tokens_per_second']} tokens/s")
    assert manifest["student_layers"] == [0, 2, 4, 6, 8, 10, 12, 15, 17, 19, 21, 23, 25, 27, 29]
    assert json.loads((run_dir / "distill" / "model" / "config.json").read_text())["num_hidden_layers"] == 15
    assert manifest["student_parameters"] < 0.65 * manifest["teacher_parameters"]
    cache = load_file(next((run_dir / "prepare" / "teacher_logits").glob("*/logits.safetensors")))
    assert cache["values"].shape[1] == 64 and cache["offsets"].shape[0] == 128 + 1  # every training dialogue
    losses = [json.loads(line)["loss"] for line in (run_dir / "distill" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < 0.5 * losses[0]  # the halved model heals on the teacher's distributions (measured 8.6 -> 3.6)
    # the teacher beside the student is the LoRA model of the run above, merged (so bf16 rounds a little apart)
    own = json.loads((teacher_dir / "evaluate" / "metrics.json").read_text())["metrics"]
    assert teacher["metrics"]["perplexity"] == pytest.approx(own["perplexity"], rel=0.01)
    # a ratio needs both figures non-zero (exact match on whole summaries is usually 0)
    assert set(teacher["retained_percent"]) == {name for name in student if student[name] and teacher["metrics"].get(name)}
