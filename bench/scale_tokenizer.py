"""The limit prepare is measured against: the fast tokenizer alone, batched, on the same texts.

    scale_tokenizer.py agnews FILE.csv MODEL      "{title}. {description}", truncated to 128 tokens
    scale_tokenizer.py dialogsum FILE.jsonl MODEL  prompt and response tokenized as prepare does (384 tokens)
    scale_tokenizer.py corpus FILE.txt MODEL       every line, whole (packing keeps every token)

The texts are read in batches of BATCH rows (pyarrow, not timed); only the tokenizer calls are timed.
Prints one JSON line: rows, tokens, tokenize_seconds.
"""

from __future__ import annotations

import json
import sys
import time

BATCH = 1000
PROMPT = "Summarize the dialogue.\n{dialogue}\nSummary:"


def agnews_batches(path):
    import pyarrow.csv as pacsv

    reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20),
                            convert_options=pacsv.ConvertOptions(column_types={"title": "string", "description": "string"}))
    for batch in reader:
        titles, descriptions = batch.column("title").to_pylist(), batch.column("description").to_pylist()
        texts = [f"{t}. {d}" for t, d in zip(titles, descriptions)]
        for i in range(0, len(texts), BATCH):
            yield (texts[i:i + BATCH],)


def dialogsum_batches(path):
    with open(path, encoding="utf-8") as handle:
        rows = []
        for line in handle:
            rows.append(json.loads(line))
            if len(rows) == BATCH:
                yield _pairs(rows)
                rows = []
        if rows:
            yield _pairs(rows)


def _pairs(rows):
    return [PROMPT.format(dialogue=r["dialogue"]) for r in rows], [" " + r["summary"] for r in rows]


def corpus_batches(path):
    with open(path, encoding="utf-8") as handle:
        lines = []
        for line in handle:
            if line.strip():
                lines.append(line.rstrip("\n"))
            if len(lines) == BATCH:
                yield (lines,)
                lines = []
        if lines:
            yield (lines,)


def main():
    kind, path, model = sys.argv[1:4]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = tokens = 0
    seconds = 0.0
    for batch in {"agnews": agnews_batches, "dialogsum": dialogsum_batches, "corpus": corpus_batches}[kind](path):
        start = time.perf_counter()
        if kind == "agnews":
            ids = tokenizer(batch[0], truncation=True, max_length=128)["input_ids"]
        elif kind == "dialogsum":
            ids = tokenizer(batch[0])["input_ids"] + tokenizer(batch[1], add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(batch[0])["input_ids"]
        seconds += time.perf_counter() - start
        rows += len(batch[0])
        tokens += sum(map(len, ids))
    print(json.dumps({"rows": rows, "tokens": tokens, "tokenize_seconds": seconds}))


if __name__ == "__main__":
    main()
