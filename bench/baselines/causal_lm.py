"""Baseline for benchmark 2: LoRA on a causal LM with a Trainer, loss on the response tokens only.

--padding max_length  the `plain` baseline: every example padded to max_length, fp32.
--padding dynamic     the `tuned` baseline: DataCollatorForSeq2Seq dynamic padding, fp32.
--qlora               the base in 4-bit NF4 (bitsandbytes, CUDA; bf16 compute), as the QLoRA paper and peft's guide.
Prints one JSON line: validation loss, real (non-padding) train tokens, train seconds.
"""

import argparse
import json
import time

from datasets import load_dataset
from peft import LoraConfig, get_peft_model
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments,
                          set_seed)

from peak import peak_gpu_mb  # bench/baselines/peak.py, beside this script

PROMPT = "Summarize the dialogue.\n{dialogue}\nSummary:"


def load_qlora_base(path: str):
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quantization, dtype=torch.bfloat16,
                                                 device_map={"": 0})
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True, help="jsonl with dialogue and summary")
    parser.add_argument("--dev", required=True, help="jsonl with dialogue and summary")
    parser.add_argument("--padding", choices=["max_length", "dynamic"], required=True)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: bench/gpu.sh")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision: the tuned side on a GPU")
    parser.add_argument("--qlora", action="store_true")
    args = parser.parse_args()
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    def encode(row):
        prompt = tokenizer(PROMPT.format(**row))["input_ids"]
        response = tokenizer(" " + row["summary"])["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt + response)[: args.max_length]
        labels = ([-100] * len(prompt) + response)[: args.max_length]
        if args.padding == "max_length":
            pad = args.max_length - len(ids)
            return {"input_ids": ids + [tokenizer.pad_token_id] * pad, "attention_mask": [1] * len(ids) + [0] * pad,
                    "labels": labels + [-100] * pad}
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    train, dev = (load_dataset("json", data_files=path, split="train") for path in (args.train, args.dev))
    train, dev = (d.map(encode, remove_columns=d.column_names) for d in (train, dev))
    model = load_qlora_base(args.model) if args.qlora else AutoModelForCausalLM.from_pretrained(args.model)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.05))
    training_args = TrainingArguments(output_dir="/tmp/bench-baseline-lm", num_train_epochs=1, per_device_train_batch_size=8,
                                      per_device_eval_batch_size=8, learning_rate=2e-4, save_strategy="no",
                                      report_to="none", disable_tqdm=True, seed=args.seed, use_cpu=args.device == "cpu",
                                      bf16=args.bf16, include_num_input_tokens_seen="non_padding")
    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=dev,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))
    start = time.monotonic()
    trainer.train()
    train_seconds = time.monotonic() - start
    print(json.dumps({"eval_loss": trainer.evaluate()["eval_loss"], "train_seconds": train_seconds,
                      "tokens": trainer.state.num_input_tokens_seen, "peak_gpu_mb": peak_gpu_mb()}))


if __name__ == "__main__":
    main()
