"""The WNUT 2017 table of bench/RESULTS-ner.md from finished runs of bench/recipes/ner-wnut17-minilm-*.yaml:
`python bench/ner_table.py RUN_DIR:LOG ...` (each run directory and the log its `adaptctl run` wrote)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def row(run_dir: Path, log: Path) -> str:
    recipe = (run_dir / "recipe.yaml").read_text()
    method = re.search(r"^method:\s*(.+)$", recipe, re.MULTILINE) or re.search(r"^\s+name:\s*(\S+)", recipe, re.MULTILINE)
    train = json.loads((run_dir / "train" / "manifest.json").read_text())
    figures = {**train, **train.get("figures", {}), **train.get("metrics", {})}
    evaluation = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    metrics = evaluation["metrics"]
    by_type = re.findall(r"entity F1 by type: (.+)$", log.read_text(), re.MULTILINE)
    cells = [run_dir.name, method.group(1).strip() if method else "?",
             f"{figures.get('trainable_parameters', 0):,}", str(figures.get("train_seconds", "?")),
             *(f"{metrics[k]:.4f}" for k in ("precision", "recall", "f1", "accuracy")),
             str(evaluation["num_examples"]), by_type[-1] if by_type else "?"]
    return "| " + " | ".join(cells) + " |"


def main(pairs: list[str]):
    print("| run | method | trainable parameters | train s | precision | recall | entity F1 | word accuracy "
          "| test sentences | F1 by type (support) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for pair in pairs:
        run_dir, log = pair.split(":")
        print(row(Path(run_dir), Path(log)))


if __name__ == "__main__":
    main(sys.argv[1:])
