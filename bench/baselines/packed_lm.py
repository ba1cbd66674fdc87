"""Baseline for bench/gpu_1b.py: the tuned Trainer on a plain-text corpus packed into full blocks (the group_texts
of the Transformers run_clm example), full fine-tuning or LoRA on every linear layer.

Tuned as a user who reads the performance guide would: bf16 mixed precision, TF32, the fused AdamW, SDPA
attention, no padding (every block full), a dataloader that pins memory.  Prints one JSON line: real
train tokens, train seconds (trainer.train alone), peak GPU memory.
"""

import argparse
import json
import time

from peak import peak_gpu_mb  # bench/baselines/peak.py, beside this script

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def blocks(path: str, tokenizer, seq: int):
    """The corpus, one document a line, tokenized with an EOS after each and cut into blocks of `seq` tokens."""
    from datasets import load_dataset

    lines = load_dataset("text", data_files=path, split="train").filter(lambda b: [bool(t.strip()) for t in b["text"]],
                                                                          batched=True)

    def pack(batch):
        stream = [token for ids in tokenizer(batch["text"])["input_ids"] for token in ids + [tokenizer.eos_token_id]]
        count = len(stream) // seq
        ids = [stream[i * seq:(i + 1) * seq] for i in range(count)]
        return {"input_ids": ids, "labels": [list(block) for block in ids]}

    return lines.map(pack, batched=True, batch_size=None, remove_columns=["text"])


def main():
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--text", required=True, help="plain text, one document a line")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train = blocks(args.text, tokenizer, args.seq)
    model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation="sdpa")
    if args.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules=LORA_TARGETS))
    training_args = TrainingArguments(output_dir="/tmp/bench-baseline-packed", max_steps=args.steps,
                                      per_device_train_batch_size=args.batch, learning_rate=2e-4 if args.lora else 1e-5,
                                      save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=not cuda,
                                      bf16=cuda, tf32=cuda and torch.cuda.get_device_capability()[0] >= 8,
                                      optim="adamw_torch_fused" if cuda else "adamw_torch", dataloader_pin_memory=cuda,
                                      logging_steps=max(1, args.steps // 3))
    trainer = Trainer(model=model, args=training_args, train_dataset=train, data_collator=default_data_collator)
    start = time.monotonic()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.monotonic() - start
    print(json.dumps({"tokens": args.steps * args.batch * args.seq, "train_seconds": seconds,
                      "peak_gpu_mb": peak_gpu_mb(), "loss": trainer.state.log_history[-1].get("train_loss")}))


if __name__ == "__main__":
    main()
