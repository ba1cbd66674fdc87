"""Benchmark 4: batched, length-sorted inference against a per-example loop, on a trained run."""

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(run_dir: str):
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from adaptctl.evaluation.inference import run_batches

    run = Path(run_dir)
    model = AutoModelForSequenceClassification.from_pretrained(run / "train" / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "train" / "model")
    rows = load_from_disk(str(run / "prepare" / "data"))["validation"].select_columns(["input_ids", "attention_mask", "token_type_ids"]).to_list()
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    forward = lambda batch: model(**batch).logits.argmax(-1).tolist()  # noqa: E731
    batched, batched_speed = run_batches(rows, collate, forward, 32, "auto")
    start = time.monotonic()
    with torch.inference_mode():
        looped = [forward(collate([row]))[0] for row in rows]
    loop_speed = len(rows) / (time.monotonic() - start)
    agreement = sum(a == b for a, b in zip(batched, looped)) / len(rows)
    print(json.dumps({"examples": len(rows), "batched_per_second": batched_speed, "loop_per_second": loop_speed,
                      "agreement": agreement}))


if __name__ == "__main__":
    main(sys.argv[1])
