"""Baseline for benchmark 7: knowledge distillation with a Trainer, as the Transformers KD guide writes it.

A Trainer subclass whose compute_loss runs the teacher under no_grad on every batch and mixes
alpha * T^2 * KL(teacher_T || student_T) (KLDivLoss, batchmean) with (1 - alpha) * the student's label loss.
The student keeps layers [0, 5] of the pretrained 6-layer MiniLM (DistilBERT-style), as adaptctl's
`distill.student.layers: 2` does.

--padding max_length  the `plain` baseline: every example padded to max_length, fp32.
--padding dynamic     the `tuned` baseline: DataCollatorWithPadding, fp32.
Prints one JSON line: test accuracy, train tokens, train seconds.
"""

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments, default_data_collator, set_seed)


class DistillationTrainer(Trainer):
    def __init__(self, *args, teacher, temperature, alpha, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher, self.temperature, self.alpha = teacher.eval(), temperature, alpha

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        student = model(**inputs)
        with torch.no_grad():
            teacher = self.teacher(**inputs)
        t = self.temperature
        soft = F.kl_div(F.log_softmax(student.logits / t, -1), F.softmax(teacher.logits / t, -1),
                        reduction="batchmean") * t * t
        loss = self.alpha * soft + (1 - self.alpha) * student.loss
        return (loss, student) if return_outputs else loss


def two_layer_student(base: str, id2label: dict) -> torch.nn.Module:
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(id2label), id2label=id2label)
    layers = model.bert.encoder.layer
    model.bert.encoder.layer = torch.nn.ModuleList([layers[0], layers[len(layers) - 1]])
    model.config.num_hidden_layers = 2
    return model


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--student", required=True, help="the pretrained model whose first and last layers are kept")
    parser.add_argument("--teacher", required=True, help="a fine-tuned classifier folder (its label2id is used)")
    parser.add_argument("--train", required=True, help="jsonl with text and label")
    parser.add_argument("--test", required=True, help="jsonl with text and label")
    parser.add_argument("--padding", choices=["max_length", "dynamic"], required=True)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.student)
    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher)
    label2id = teacher.config.label2id  # the student's labels in the teacher's order
    pad = "max_length" if args.padding == "max_length" else False

    def encode(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=args.max_length, padding=pad)
        encoded["labels"] = [label2id[label] for label in batch["label"]]
        return encoded

    train = load_dataset("json", data_files=args.train, split="train")
    test = load_dataset("json", data_files=args.test, split="train")
    train, test = (d.map(encode, batched=True, remove_columns=["text", "label"]) for d in (train, test))
    student = two_layer_student(args.student, {i: label for label, i in label2id.items()})
    training_args = TrainingArguments(output_dir="/tmp/bench-baseline-distill", num_train_epochs=args.epochs,
                                      per_device_train_batch_size=32, per_device_eval_batch_size=32,
                                      learning_rate=args.learning_rate, save_strategy="no", report_to="none",
                                      disable_tqdm=True, seed=args.seed, use_cpu=True,
                                      include_num_input_tokens_seen="non_padding")
    collator = default_data_collator if pad else DataCollatorWithPadding(tokenizer)
    trainer = DistillationTrainer(model=student, args=training_args, train_dataset=train, data_collator=collator,
                                  teacher=teacher, temperature=args.temperature, alpha=args.alpha)
    start = time.monotonic()
    trainer.train()
    train_seconds = time.monotonic() - start
    predictions = trainer.predict(test)
    accuracy = float((np.argmax(predictions.predictions, -1) == predictions.label_ids).mean())
    print(json.dumps({"accuracy": accuracy, "train_seconds": train_seconds, "tokens": trainer.state.num_input_tokens_seen}))


if __name__ == "__main__":
    main()
