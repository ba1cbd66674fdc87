"""Domain vocabulary, measured (issue 17): does adding mined AG News words to MiniLM's tokenizer before
domain-adaptive pretraining change a classifier built on top of it?

Rows of AG News test.csv, shuffled with seed 0: 600 unlabelled texts for masked-LM pretraining, 200
labelled rows to train the classifier, 500 other rows to test it.  Two DAPT runs (the plain tokenizer, and
`model.add_tokens: {from_data: N}`), then the classifier from each over training seeds 1, 2, 3.  Writes
bench/RESULTS-vocab.md: tokens per word before and after, masked perplexity, accuracy per seed.

    python bench/domain_vocab.py [--mined 100]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DATA, RUNS = BENCH / "out" / "data", BENCH / "out" / "runs"
SHARED = BENCH.parent.parent / "shared" / "data"
SEEDS = (1, 2, 3)


def write_rows():
    with (SHARED / "ag_news" / "test.csv").open(newline="", encoding="utf-8") as f:
        rows = [{"label": label, "title": title, "description": text} for label, title, text in csv.reader(f)]
    random.Random(0).shuffle(rows)
    DATA.mkdir(parents=True, exist_ok=True)
    for name, part in (("dapt", rows[:600]), ("train", rows[600:800]), ("test", rows[800:1300])):
        (DATA / f"agnews-{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))


def adaptctl(recipe: str, run_dir: Path, *settings: str):
    command = [sys.executable, "-m", "adaptctl", "run", str(BENCH / "recipes" / recipe), "--run-dir", str(run_dir),
               "--force", "--quiet", *(arg for s in settings for arg in ("--set", s))]
    subprocess.run(command, check=True, cwd=BENCH.parent)
    return run_dir


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def variant(name: str, settings: tuple[str, ...]) -> dict:
    dapt = adaptctl("agnews-dapt-mlm.yaml", RUNS / f"vocab-{name}-dapt", *settings)
    stats = read(dapt / "prepare" / "stats.json")
    accuracy = [read(adaptctl("agnews-classifier.yaml", RUNS / f"vocab-{name}-seed{seed}", f"model.base={dapt}",
                              f"seed={seed}") / "evaluate" / "metrics.json")["metrics"]["accuracy"] for seed in SEEDS]
    return {"vocabulary": stats.get("vocabulary"), "accuracy": accuracy,
            "masked_perplexity": read(dapt / "evaluate" / "metrics.json")["metrics"]["perplexity"]}


def report(results: dict, mined: int) -> str:
    lines = ["# Domain vocabulary (bench/domain_vocab.py)", "",
             "all-MiniLM-L6-v2, masked-LM DAPT on 600 AG News texts (1 epoch), then a full fine-tune on 200 labelled "
             "rows (3 epochs), accuracy on 500 other rows; training seeds 1, 2, 3.", "",
             "| DAPT tokenizer | tokens per word (before -> after) | masked perplexity (own tokens) | accuracy per seed | mean |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        v = r["vocabulary"] or {}
        fertility = f"{v.get('fertility_before', 'n/a')} -> {v.get('fertility_after', 'n/a')}" if v else "as shipped"
        lines.append(f"| {name} | {fertility} | {r['masked_perplexity']:.1f} | "
                     f"{' / '.join(f'{a:.3f}' for a in r['accuracy'])} | {statistics.mean(r['accuracy']):.4f} |")
    return "\n".join(lines + ["", f"`{mined}` mined words: `model.add_tokens: {{from_data: {mined}}}`. Masked perplexities "
                              "are over each tokenizer's own tokens, so they do not compare across rows.", ""])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mined", type=int, default=100)
    args = parser.parse_args()
    write_rows()
    results = {"plain": variant("plain", ()),
               f"+{args.mined} mined words": variant("vocab", (f"model.add_tokens={{from_data: {args.mined}}}",))}
    (BENCH / "RESULTS-vocab.md").write_text(report(results, args.mined))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
