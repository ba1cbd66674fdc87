"""Benchmark 4: batched, length-sorted inference against a per-example loop, on trained runs.

    evaluate_speed.py classify RUN_DIR    SST-2 dev through benchmark 1's model
    evaluate_speed.py generate RUN_DIR    greedy summaries from benchmark 2's LoRA model, against
                                          Transformers' generate in a plain script (same batches)

Prints one JSON line: examples (or generated tokens) per second each way, and how
often the ways agree (batched bf16 and fp32 may round differently).
"""

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GENERATE_EXAMPLES, NEW_TOKENS, REPEATS = 16, 48, 2


def classify(run: Path) -> dict:
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from adaptctl.evaluation.inference import run_batches

    model = AutoModelForSequenceClassification.from_pretrained(run / "train" / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "train" / "model")
    columns = ["input_ids", "attention_mask", "token_type_ids"]
    rows = load_from_disk(str(run / "prepare" / "data"))["validation"].select_columns(columns).to_list()
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    forward = lambda batch: model(**batch).logits.argmax(-1).tolist()  # noqa: E731
    batched, batched_speed = run_batches(rows, collate, forward, 32, "auto")
    start = time.monotonic()
    with torch.inference_mode():
        looped = [forward(collate([row]))[0] for row in rows]
    loop_speed = len(rows) / (time.monotonic() - start)
    return {"examples": len(rows), "batched_per_second": batched_speed, "loop_per_second": loop_speed,
            "agreement": sum(a == b for a, b in zip(batched, looped)) / len(rows)}


def generate(run: Path) -> dict:
    """Generated tokens/s of adaptctl's generation (batches of 8, length-sorted, left-padded, bf16 autocast,
    frozen weights cast once) against Transformers' own generate in a plain script: the same 8-prompt
    batches in file order, fp32 and bf16 autocast; and against model.generate one prompt at a time.
    Each side runs REPEATS times, alternating; the best run counts (the machine is shared)."""
    from unittest import mock

    import torch
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from adaptctl.evaluation import generation, inference
    from adaptctl.models.loading import load_adapted
    from adaptctl.recipe.loader import load_recipe
    from adaptctl.tasks import get_task

    recipe = load_recipe(run / "recipe.yaml").recipe
    model = load_adapted(run / "train" / "model", get_task(recipe.task), recipe, {}).eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "train" / "model")
    rows = load_from_disk(str(run / "prepare" / "data"))["validation"].select(range(GENERATE_EXAMPLES))
    prompts = [ids[:length] for ids, length in zip(rows["input_ids"], rows["prompt_length"])]
    settings = recipe.evaluate.generation.model_copy(update={"max_new_tokens": NEW_TOKENS, "num_beams": 1,
                                                             "do_sample": False})
    pad, eos = generation.pad_token_id(tokenizer), generation.eos_token_ids(model, tokenizer)

    def adaptctl():
        return generation.generate(model, prompts, settings, pad_id=pad, eos_ids=eos, encoder_decoder=False,
                                   batch_size=8)[0]

    def adaptctl_casting_per_use():  # the lever off: inference_mode, where autocast casts weights at every forward
        with mock.patch.object(inference, "weights_cast_once", lambda model: torch.inference_mode()):
            return adaptctl()

    sides = {"adaptctl": adaptctl, "adaptctl, weights cast per use": adaptctl_casting_per_use,
             "plain generate, fp32": lambda: _plain_generate(model, tokenizer, prompts, pad, eos, 8, "fp32"),
             "plain generate, bf16 autocast": lambda: _plain_generate(model, tokenizer, prompts, pad, eos, 8, "bf16"),
             "per-prompt loop, fp32": lambda: _plain_generate(model, tokenizer, prompts, pad, eos, 1, "fp32")}
    found = {name: {"seconds": float("inf")} for name in sides}
    for _ in range(REPEATS):
        for name, side in sides.items():
            start = time.monotonic()
            outputs = side()
            seconds = time.monotonic() - start
            if seconds < found[name]["seconds"]:
                found[name] = {"seconds": seconds, "outputs": outputs}
    reference = found["plain generate, fp32"]["outputs"]
    return {"examples": len(prompts), "batch_size": 8, "max_new_tokens": NEW_TOKENS, "repeats": REPEATS,
            "sides": {name: {"tokens_per_second": sum(map(len, f["outputs"])) / f["seconds"],
                             "generated_tokens": sum(map(len, f["outputs"])), "seconds": round(f["seconds"], 2),
                             "agreement_with_plain_fp32": sum(a == b for a, b in zip(f["outputs"], reference)) / len(prompts)}
                      for name, f in found.items()}}


def _plain_generate(model, tokenizer, prompts, pad, eos, batch_size, precision) -> list[list[int]]:
    """What a hand-written script does: tokenizer.pad on the left, batches in file order, model.generate."""
    import contextlib

    import torch

    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = pad
    cast = torch.autocast(model.device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    outputs = []
    with torch.inference_mode(), cast:
        for i in range(0, len(prompts), batch_size):
            batch = tokenizer.pad({"input_ids": prompts[i:i + batch_size]}, return_tensors="pt").to(model.device)
            new = model.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=pad,
                                 eos_token_id=eos)[:, batch["input_ids"].shape[1]:]
            outputs += [_until_stop(row.tolist(), set(eos) | {pad}) for row in new]
    return outputs


def _until_stop(ids: list[int], stops: set[int]) -> list[int]:
    return next((ids[:i] for i, token in enumerate(ids) if token in stops), ids)


if __name__ == "__main__":
    mode, run_dir = sys.argv[1], Path(sys.argv[2])
    print(json.dumps({"classify": classify, "generate": generate}[mode](run_dir)))
