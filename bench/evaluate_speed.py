"""Benchmark 4: batched, length-sorted inference against a per-example loop, on trained runs.

    evaluate_speed.py classify RUN_DIR    SST-2 dev through benchmark 1's model
    evaluate_speed.py generate RUN_DIR    greedy summaries from benchmark 2's LoRA model

Prints one JSON line: examples (or generated tokens) per second each way, and how
often the two ways agree (batched bf16 and one-at-a-time may round differently).
"""

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GENERATE_EXAMPLES, NEW_TOKENS = 16, 48


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
    """adaptctl's generation (batches of 8, length-sorted, left-padded, bf16) against model.generate per prompt."""
    import torch
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from adaptctl.evaluation.generation import eos_token_ids, generate as batched_generate, pad_token_id, until_stop
    from adaptctl.loading import load_adapted
    from adaptctl.recipe_loader import load_recipe

    recipe = load_recipe(run / "recipe.yaml").recipe
    model = load_adapted(run / "train" / "model", recipe, {}).eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "train" / "model")
    rows = load_from_disk(str(run / "prepare" / "data"))["validation"].select(range(GENERATE_EXAMPLES))
    prompts = [ids[:length] for ids, length in zip(rows["input_ids"], rows["prompt_length"])]
    settings = recipe.evaluate.generation.model_copy(update={"max_new_tokens": NEW_TOKENS, "num_beams": 1,
                                                             "do_sample": False})
    pad, eos = pad_token_id(tokenizer), eos_token_ids(model, tokenizer)
    batched, speed = batched_generate(model, prompts, settings, pad_id=pad, eos_ids=eos, encoder_decoder=False,
                                      batch_size=8)
    start, looped = time.monotonic(), []
    with torch.inference_mode():
        for prompt in prompts:
            output = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                    pad_token_id=pad, eos_token_id=eos)[0, len(prompt):].tolist()
            looped.append(until_stop(output, set(eos) | {pad}, skip_first=False))
    loop_seconds = time.monotonic() - start
    return {"examples": len(prompts), "batched_tokens_per_second": speed["generation_tokens_per_second"],
            "loop_tokens_per_second": sum(map(len, looped)) / loop_seconds,
            "agreement": sum(a == b for a, b in zip(batched, looped)) / len(prompts)}


if __name__ == "__main__":
    mode, run_dir = sys.argv[1], Path(sys.argv[2])
    print(json.dumps({"classify": classify, "generate": generate}[mode](run_dir)))
