"""bench/scale.py num_proc: prepare's tokenize map (classification's encode: truncation to 128 tokens, label
ids, encoding_stats; batches of 1,000) over AG News rows read by datasets, with num_proc N.  Prints one
JSON line: rows and the map's seconds.

    scale_num_proc.py FILE.csv MODEL N
"""

import json
import sys
import time


def main():
    path, model, procs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from datasets import Dataset
    from transformers import AutoTokenizer

    from adaptctl.data.tokens import encoding_stats

    ds = Dataset.from_csv(path, keep_default_na=False)
    ds = ds.map(lambda b: {"text": [f"{t}. {d}" for t, d in zip(b["title"], b["description"])],
                           "label": [str(x) for x in b["label"]]}, batched=True, remove_columns=ds.column_names)
    labels = {label: i for i, label in enumerate(sorted(ds.unique("label")))}
    tokenizer = AutoTokenizer.from_pretrained(model)

    def encode(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=128)
        out = {key: encoded[key] for key in encoded}
        out["labels"] = [labels[label] for label in batch["label"]]
        return {**out, **encoding_stats(encoded, 128)}

    start = time.monotonic()
    out = ds.map(encode, batched=True, batch_size=1000, num_proc=procs if procs > 1 else None)
    print(json.dumps({"rows": len(out), "map_seconds": time.monotonic() - start}))


if __name__ == "__main__":
    main()
