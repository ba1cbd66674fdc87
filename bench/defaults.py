"""Which classification defaults learn (issue 33.7): the LoRA target modules, the pooling of a
sentence-transformers base and the learning rate, measured on SMS spam, SST-2 and AG News at 1 and 3
epochs with all-MiniLM-L6-v2, every run through `adaptctl run` (prepare, train, evaluate) in this process.

    nice -n 10 .venv/bin/python bench/defaults.py run [--only NAME ...] [--epochs 1 3] [--seeds 1]
    .venv/bin/python bench/defaults.py table        # bench/RESULTS-defaults.md from bench/out/defaults/results.jsonl

Each configuration is a set of --set overrides on one recipe per data set (written under bench/out/defaults/);
results.jsonl keeps one line per finished run, so an interrupted benchmark goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DATA = Path(os.environ.get("BENCH_DATA", BENCH.parent.parent / "shared" / "data"))
OUT = BENCH / "out" / "defaults"
RESULTS = OUT / "results.jsonl"
TABLE = BENCH / "RESULTS-defaults.md"
# One thread: on this shared 2-core machine (load ~10) two OpenMP threads spin against each other.
THREADS = int(os.environ.get("BENCH_THREADS", "1"))

# Rows: the SMS figure was on 1,200 rows; SST-2 and AG News get as many, test sets of 600-872.
DATASETS = {
    "sms_spam": {"metric": "f1", "recipe": f"""
name: defaults-sms
task: classification
model: {{base: sentence-transformers/all-MiniLM-L6-v2}}
data:
  source: {{path: {DATA}/sms_spam/SMSSpamCollection, format: tsv, header: false, names: [label, text], quoting: 3}}
  text: text
  label: label
  splits: {{validation: 0.05, test: 0.2, stratify: true}}
  max_length: 64
  max_train_samples: 1200
train: {{batch_size: 32, precision: auto, logging_steps: 10, validate: false, class_weights: auto}}
evaluate: {{split: test, metrics: [accuracy, f1], positive_label: spam, baseline: none}}
"""},
    "sst2": {"metric": "accuracy", "recipe": f"""
name: defaults-sst2
task: classification
model: {{base: sentence-transformers/all-MiniLM-L6-v2}}
data:
  source: {{path: {DATA}/sst2/stsa.binary.train, format: csv, header: false, names: [label, text], delimiter: '(?<=^[01]) '}}
  test: {{path: {DATA}/sst2/stsa.binary.dev, format: csv, header: false, names: [label, text], delimiter: '(?<=^[01]) '}}
  text: text
  label: label
  splits: {{validation: 0.0, test: 0.0}}
  max_length: 64
  max_train_samples: 1200
train: {{batch_size: 32, precision: auto, logging_steps: 10, validate: false}}
evaluate: {{split: test, metrics: [accuracy, f1], baseline: none}}
"""},
    "ag_news": {"metric": "accuracy", "recipe": f"""
name: defaults-agnews
task: classification
model: {{base: sentence-transformers/all-MiniLM-L6-v2}}
data:
  source: {{path: {DATA}/ag_news/test.csv, format: csv, header: false, names: [label, title, description]}}
  text: "{{title}}. {{description}}"
  label: label
  splits: {{validation: 0.0, test: 0.1, stratify: true}}
  max_length: 64
  max_train_samples: 1200
train: {{batch_size: 32, precision: auto, logging_steps: 10, validate: false}}
evaluate: {{split: test, metrics: [accuracy, f1], baseline: none}}
"""},
}

# name -> --set overrides.  "today" is the default section before this change (query/value, [CLS] pooler,
# lr 2e-4); the others change one thing or two.
CONFIGS = {
    "qv-cls-2e-4": ["method.target_modules=[query,value]", "model.pooling=cls", "train.learning_rate=2.0e-4"],
    "all-cls-2e-4": ["method.target_modules=all-linear", "model.pooling=cls", "train.learning_rate=2.0e-4"],
    "qv-mean-2e-4": ["method.target_modules=[query,value]", "model.pooling=mean", "train.learning_rate=2.0e-4"],
    "all-mean-2e-4": ["method.target_modules=all-linear", "model.pooling=mean", "train.learning_rate=2.0e-4"],
    "all-mean-1e-3": ["method.target_modules=all-linear", "model.pooling=mean", "train.learning_rate=1.0e-3"],
    "all-cls-1e-3": ["method.target_modules=all-linear", "model.pooling=cls", "train.learning_rate=1.0e-3"],
    # the recipe's method section without target_modules, no pooling, no learning rate: adaptctl's defaults
    "defaults": [],
}


def _done() -> set[tuple]:
    if not RESULTS.is_file():
        return set()
    return {(r["data"], r["config"], r["epochs"], r["seed"]) for r in map(json.loads, RESULTS.read_text().splitlines())}


def _claim(*key) -> bool:
    """Whether this process takes the run (two processes may share the list; a run is claimed once)."""
    claims = OUT / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(claims / "-".join(map(str, key)), os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def run(only: list[str], epochs: list[int], seeds: list[int], datasets: list[str]):
    from adaptctl.cli import main

    OUT.mkdir(parents=True, exist_ok=True)
    for data in datasets:
        (OUT / f"{data}.yaml").write_text(DATASETS[data]["recipe"] + "method: {name: lora, r: 8, alpha: 16, dropout: 0.05}\n")
    for epoch in epochs:  # every 1-epoch result first: the cheap half of the table
        for name in only or list(CONFIGS):
            for data in datasets:
                recipe = OUT / f"{data}.yaml"
                for seed in seeds:
                    if (data, name, epoch, seed) in _done() or not _claim(data, name, epoch, seed):
                        continue  # finished, or another process of this benchmark runs it
                    run_dir = OUT / "runs" / f"{data}-{name}-e{epoch}-s{seed}"
                    sets = [*CONFIGS[name], f"train.epochs={epoch}", f"seed={seed}"]
                    args = ["run", str(recipe), "--run-dir", str(run_dir), "--stages", "prepare,train,evaluate", "-q", "--threads", str(THREADS)]
                    start = time.monotonic()
                    code = main(args + [a for s in sets for a in ("--set", s)])
                    seconds = time.monotonic() - start
                    if code != 0:
                        print(f"{data} {name} e{epoch} s{seed}: exit {code}", file=sys.stderr)
                        continue
                    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
                    train = json.loads((run_dir / "train" / "manifest.json").read_text())
                    row = {"data": data, "config": name, "epochs": epoch, "seed": seed,
                           "metric": DATASETS[data]["metric"], "value": metrics["metrics"][DATASETS[data]["metric"]],
                           "accuracy": metrics["metrics"]["accuracy"], "f1": metrics["metrics"]["f1"],
                           "test_rows": metrics["num_examples"], "predicted_classes": _predicted(run_dir),
                           "steps": train.get("global_step") or train.get("steps"), "seconds": round(seconds, 1),
                           "chosen": train.get("chosen_defaults")}
                    with RESULTS.open("a") as handle:
                        handle.write(json.dumps(row) + "\n")
                    print(json.dumps(row), file=sys.stderr)


def _predicted(run_dir: Path) -> int:
    rows = [json.loads(line) for line in (run_dir / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    return len({r.get("prediction") for r in rows})


def table():
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    configs = list(dict.fromkeys(r["config"] for r in rows))
    setting = ("all-MiniLM-L6-v2, LoRA r 8 / alpha 16 / dropout 0.05, batch 32, max_length 64, 1,200 training rows "
               "per data set (SMS spam with `class_weights: auto`), precision auto (bf16 autocast on this CPU).")
    metric = ("Metric: SMS spam F1 (positive class spam, 1,116 test messages), SST-2 accuracy (872 dev sentences), "
              "AG News accuracy (760 held-out rows of test.csv, stratified). Seeds as listed; one line per run in "
              "`bench/out/defaults/results.jsonl`.")
    command = ("Produced by `nice -n 10 .venv/bin/python bench/defaults.py run` then `bench/defaults.py table` "
               "(2 shared CPU cores; the seconds are whole-process times on a loaded machine, for orientation only).")
    lines = ["# Classification defaults that learn (issue 33.7)", "", setting, metric, "", command, ""]
    for epochs in sorted({r["epochs"] for r in rows}):
        lines += [f"## {epochs} epoch{'s' if epochs > 1 else ''}", "",
                  "| configuration | " + " | ".join(DATASETS) + " | mean | s (sum) |", "|---|" + "---|" * (len(DATASETS) + 2)]
        for name in configs:
            cells, means, seconds = [], [], 0.0
            for data in DATASETS:
                found = [r for r in rows if r["config"] == name and r["data"] == data and r["epochs"] == epochs]
                if not found:
                    cells.append("-")
                    continue
                values = [r["value"] for r in found]
                seconds += sum(r["seconds"] for r in found)
                mean = sum(values) / len(values)
                means.append(mean)
                collapsed = sum(r["predicted_classes"] == 1 for r in found)
                cells.append(" / ".join(f"{v:.3f}" for v in values) + (f" ({collapsed} collapsed)" if collapsed else ""))
            overall = f"{sum(means) / len(means):.3f}" if len(means) == len(DATASETS) else "-"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {overall} | {seconds:.0f} |")
        lines.append("")
        lines += _ranking(rows, configs, epochs) + _same_as_chosen(rows, epochs)
    lines += _unmeasured(rows)
    TABLE.write_text("\n".join(lines) + "\n")
    print(TABLE.read_text())


# The configuration the defaults are meant to resolve to (adaptctl's classification defaults, issue 33.7).
CHOSEN = "all-mean-1e-3"


def _same_as_chosen(rows: list[dict], epochs: int) -> list[str]:
    """Whether the recipe that leaves the settings unset ("defaults") scored exactly as CHOSEN where both ran:
    the defaults resolve to it (training is deterministic for a seed)."""
    pairs = [(r, s) for r in rows for s in rows if r["config"] == "defaults" and s["config"] == CHOSEN
             and r["epochs"] == s["epochs"] == epochs and r["data"] == s["data"] and r["seed"] == s["seed"]]
    if not pairs:
        return []
    same = [r["data"] for r, s in pairs if r["value"] == s["value"] and r["accuracy"] == s["accuracy"]]
    differ = [r["data"] for r, s in pairs if r["data"] not in same]
    return [f"`defaults` (method, pooling and learning rate left unset) against {CHOSEN}: identical figures on "
            f"{', '.join(same) or 'none'}" + (f"; different on {', '.join(differ)}" if differ else "") + ".", ""]


def _unmeasured(rows: list[dict]) -> list[str]:
    """Every (configuration, data set, epochs) cell with no run, said plainly rather than left as a bare '-'."""
    done = {(r["config"], r["data"], r["epochs"]) for r in rows}
    missing = [f"{name} / {data} / {epochs} epoch{'s' if epochs > 1 else ''}" for epochs in (1, 3)
               for name in CONFIGS for data in DATASETS if (name, data, epochs) not in done]
    if not missing:
        return []
    return ["## Not measured", "",
            (f"These cells were not run: on the shared 2-core machine one run took {min(r['seconds'] for r in rows) / 60:.0f} "
             f"to {max(r['seconds'] for r in rows) / 60:.0f} minutes depending on the load, "
            f"and the session's time went first to {CHOSEN} (the chosen default) and qv-cls-2e-4 (the old default) on "
            "every data set at 1 and 3 epochs. `bench/defaults.py run --only NAME --epochs N` measures any of them; "
            "results.jsonl keeps what is done."), "", *[f"- {cell}" for cell in missing], ""]


def _ranking(rows: list[dict], configs: list[str], epochs: int) -> list[str]:
    """The configurations measured on every data set, best mean first, with each one's worst data set."""
    scored = []
    for name in configs:
        found = {data: [r["value"] for r in rows if r["config"] == name and r["data"] == data and r["epochs"] == epochs]
                 for data in DATASETS}
        if all(found.values()):
            means = {data: sum(v) / len(v) for data, v in found.items()}
            scored.append((sum(means.values()) / len(means), min(means.values()), name))
    if not scored:
        return []
    scored.sort(reverse=True)
    return [f"Ranked by the mean over the three data sets at {epochs} epoch{'s' if epochs > 1 else ''}: "
            + "; ".join(f"{name} {mean:.3f} (worst data set {worst:.3f})" for mean, worst, name in scored) + ".", ""]


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["run", "table"])
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--epochs", nargs="*", type=int, default=[1, 3])
    parser.add_argument("--seeds", nargs="*", type=int, default=[1])
    parser.add_argument("--data", nargs="*", default=list(DATASETS))
    args = parser.parse_args()
    run(args.only, args.epochs, args.seeds, args.data) if args.what == "run" else table()
