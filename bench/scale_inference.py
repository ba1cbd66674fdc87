"""bench/scale.py inference: `adaptctl predict` over 10k and 100k AG News rows, streamed to a file, against a plain
transformers loop with the same batch (tokenize a batch, forward, softmax, one JSON line a row, written as it
goes), each a whole process under bench/measure.py: rows/s and peak RSS.

The classifier is a 2-layer random BERT (hidden 64, MiniLM's tokenizer, 4 labels) trained 5 steps by adaptctl:
on this shared 2-core machine MiniLM itself would need most of an hour per side at 100k rows, and what scales
with the rows here is the pipeline around the model (reading, tokenizing, batching, writing, memory), which a
small model shows without the model's compute hiding it.

    scale_inference.py plain MODEL_DIR FILE.csv OUT.jsonl BATCH    the plain loop (run by bench/scale.py)
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
BATCH = 64
SIZES = (10_000, 100_000)


def tiny_classifier(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    sys.path.insert(0, str(ROOT))
    from adaptctl.models.resolve import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, num_labels=4)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_inference(scale: Path, record, measured, data_file):
    base = tiny_classifier(scale / "tiny-bert")
    run = scale / "infer-run"
    shutil.rmtree(run, ignore_errors=True)
    env = {"PYTHONPATH": str(ROOT)}
    measured([PYTHON, "-m", "adaptctl", "run", str(BENCH / "recipes" / "scale-agnews.yaml"), "--run-dir", str(run),
              "--stages", "prepare,train", "--set", f"model.base={base}", "--set", "train.max_steps=5",
              "--set", f"data.source.path={data_file('agnews', 10_000)}", "--quiet"], env)
    for rows in SIZES:
        path, out = data_file("agnews", rows), scale / "predictions.jsonl"
        for side in ("plain", "adaptctl"):
            if side == "adaptctl":
                command = [PYTHON, "-m", "adaptctl", "predict", str(run), "--input", str(path), "--output", str(out),
                           "--batch-size", str(BATCH), "--quiet"]
            else:
                command = [PYTHON, str(BENCH / "scale_inference.py"), "plain", str(run / "train" / "model"), str(path),
                           str(out), str(BATCH)]
            found = measured(command, env)
            with open(out, encoding="utf-8") as handle:
                written = sum(1 for _ in handle)
            out.unlink()
            record({"measure": "predict", "side": side, "rows": rows, "written": written, "batch": BATCH,
                    "seconds": found["seconds"], "rss_mb": found["rss_mb"], "anon_mb": found["anon_mb"],
                    "rows_per_second": rows / found["seconds"]})


def plain(model_dir: str, path: str, out: str, batch: int):
    """The loop a user writes: batches of the CSV's texts in file order, padded per batch, probabilities out."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]

    def flush(texts, handle):
        encoded = tokenizer(texts, truncation=True, max_length=128, padding=True, return_tensors="pt")
        with torch.inference_mode():
            probabilities = model(**encoded).logits.softmax(-1).tolist()
        for text, p in zip(texts, probabilities):
            label = names[max(range(len(p)), key=p.__getitem__)]
            handle.write(json.dumps({"text": text, "prediction": label,
                                     "probabilities": dict(zip(names, (round(x, 6) for x in p)))}) + "\n")

    with open(path, encoding="utf-8", newline="") as source, open(out, "w", encoding="utf-8") as handle:
        texts = []
        for row in csv.DictReader(source):
            texts.append(f"{row['title']}. {row['description']}")
            if len(texts) == batch:
                flush(texts, handle)
                texts = []
        if texts:
            flush(texts, handle)


if __name__ == "__main__":
    if sys.argv[1] == "plain":
        plain(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
