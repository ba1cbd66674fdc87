"""Baseline for benchmark 1: the Trainer recipe from the classic tutorials.

--padding max_length  the `plain` baseline: pad every example to max_length, default collator, fp32.
--padding dynamic     the `tuned` baseline: DataCollatorWithPadding (what a competent user writes), fp32.
Random sampling either way.  Prints one JSON line: accuracy, train tokens, train seconds.
"""

import argparse
import json
import time

import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments, default_data_collator, set_seed)

from peak import peak_gpu_mb  # bench/baselines/peak.py, beside this script


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True, help="jsonl with text and label (0/1)")
    parser.add_argument("--dev", required=True, help="jsonl with text and label (0/1)")
    parser.add_argument("--padding", choices=["max_length", "dynamic"], required=True)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: bench/gpu.sh")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision: the tuned side on a GPU")
    args = parser.parse_args()
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    pad = "max_length" if args.padding == "max_length" else False

    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=args.max_length, padding=pad)

    train = load_dataset("json", data_files=args.train, split="train")
    dev = load_dataset("json", data_files=args.dev, split="train")
    train, dev = (d.map(encode, batched=True, remove_columns=["text"]) for d in (train, dev))
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    training_args = TrainingArguments(output_dir="/tmp/bench-baseline", num_train_epochs=1, per_device_train_batch_size=16,
                                      per_device_eval_batch_size=32, learning_rate=5e-5, save_strategy="no",
                                      report_to="none", disable_tqdm=True, seed=args.seed, use_cpu=args.device == "cpu",
                                      bf16=args.bf16, include_num_input_tokens_seen="non_padding")
    collator = default_data_collator if pad else DataCollatorWithPadding(tokenizer)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=dev, data_collator=collator,
                      compute_metrics=lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())})
    start = time.monotonic()
    trainer.train()
    train_seconds = time.monotonic() - start
    metrics = trainer.evaluate()
    print(json.dumps({"accuracy": metrics["eval_accuracy"], "train_seconds": train_seconds,
                      "tokens": trainer.state.num_input_tokens_seen, "peak_gpu_mb": peak_gpu_mb()}))


if __name__ == "__main__":
    main()
