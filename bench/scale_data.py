"""The data of bench/scale.py: real text replicated to the sizes users prepare, under /tmp (never committed).

    scale_data.py agnews ROWS OUT.csv     AG News test (7,600 news) repeated, with a row id: id,label,title,description
    scale_data.py dialogsum ROWS OUT.jsonl DialogSum dev + test dialogues repeated, with a row id
    scale_data.py corpus BYTES OUT.txt    plain text, one document a line: AG News, DialogSum and SST-2 repeated

Every copy of a row is the same text; the id tells the copies apart (a row id is what a real export carries).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")


def agnews_rows() -> list[list[str]]:
    with open(DATA / "ag_news" / "test.csv", encoding="utf-8", newline="") as handle:
        return [row for row in csv.reader(handle) if row]


def dialogsum_rows() -> list[dict]:
    rows = []
    for name in ("dialogsum.dev.jsonl", "dialogsum.test.jsonl"):
        with open(DATA / "dialogsum" / name, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                rows.append({"dialogue": record["dialogue"], "summary": record.get("summary") or record["summary1"]})
    return rows


def write_agnews(rows: int, out: Path):
    source = agnews_rows()
    with open(out, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "title", "description"])
        for i in range(rows):
            writer.writerow([i, *source[i % len(source)]])


def write_dialogsum(rows: int, out: Path):
    source = dialogsum_rows()
    with open(out, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"id": i, **source[i % len(source)]}, ensure_ascii=False) + "\n" for i in range(rows))


def corpus_documents() -> list[str]:
    """One line per document: AG News (title. description), DialogSum dialogues, SST-2 sentences."""
    docs = [f"{title}. {description}".replace("\\", " ") for _, title, description in agnews_rows()]
    docs += [row["dialogue"].replace("\n", " ") for row in dialogsum_rows()]
    with open(DATA / "sst2" / "stsa.binary.train", encoding="utf-8") as handle:
        docs += [line[2:].strip() for line in handle if line.strip()]
    return docs


def write_corpus(size: int, out: Path):
    docs = corpus_documents()
    written = 0
    with open(out, "w", encoding="utf-8") as handle:
        while written < size:
            for doc in docs:
                line = doc + "\n"
                handle.write(line)
                written += len(line.encode("utf-8"))
                if written >= size:
                    break


if __name__ == "__main__":
    kind, amount, path = sys.argv[1], int(float(sys.argv[2])), Path(sys.argv[3])
    path.parent.mkdir(parents=True, exist_ok=True)
    {"agnews": write_agnews, "dialogsum": write_dialogsum, "corpus": write_corpus}[kind](amount, path)
