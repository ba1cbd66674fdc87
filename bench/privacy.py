"""Privacy benchmarks (bench/RESULTS-privacy.md): what DP-SGD costs and buys, measured on real data.

    python bench/privacy.py dp        # SST-2, MiniLM full and LoRA: accuracy at epsilon 1, 3, 8 and without DP
    python bench/privacy.py pii       # SMS spam: PII found per type, and the classifier on redacted against raw text
    python bench/privacy.py canaries  # SmolLM2 LoRA on DialogSum with canaries: exposure and ROUGE-L, DP against none
    python bench/privacy.py report    # bench/RESULTS-privacy.md from bench/out/privacy/*.jsonl

Each run is `adaptctl run` on a recipe under bench/out/privacy (written here from the shared data) with
--set overrides, under `nice -n 10`; one JSON line per run goes to bench/out/privacy/<kind>.jsonl, and a
run already recorded is skipped, so the command can be stopped and run again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out" / "privacy"
SHARED = ROOT.parent / "shared" / "data"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}

# SST-2: 1,000 training sentences (of 6,920), its 872 dev sentences as the test split; 2 epochs of Poisson
# batches of 32 expected rows (64 steps): what a machine shared by 8 jobs on 2 cores finishes (load 20+).
# The learning rates are the non-private ones, unchanged under DP.
SST2_TRAIN_ROWS = 1000
EPSILONS = (None, 8.0, 3.0, 1.0)
SEEDS = (1, 2, 3)
METHODS = {"lora": {"method": {"name": "lora", "r": 8, "alpha": 16, "target_modules": ["query", "value"]}, "lr": 1e-3},
           "full": {"method": {"name": "full"}, "lr": 1e-4}}


def sst2_files() -> dict:
    data = OUT / "data"
    data.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, name in (("train", "stsa.binary.train"), ("test", "stsa.binary.dev")):
        path = data / f"sst2-{split}.jsonl"
        if not path.exists():
            rows = [line.split(" ", 1) for line in (SHARED / "sst2" / name).read_text().splitlines() if line.strip()]
            path.write_text("".join(json.dumps({"label": "positive" if label == "1" else "negative", "text": text})
                                    + "\n" for label, text in rows))
        files[split] = path
    return files


def sst2_recipe() -> Path:
    files = sst2_files()
    recipe = {"name": "privacy-sst2", "task": "classification", "seed": 1,
              "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
              "data": {"source": str(files["train"]), "test": str(files["test"]), "text": "text", "label": "label",
                       "splits": {"validation": 0.0, "test": 0.0, "seed": 1}, "max_length": 64,
                       "max_train_samples": SST2_TRAIN_ROWS},
              "method": {"name": "full"},
              "train": {"epochs": 2, "batch_size": 32, "precision": "auto", "validate": False, "logging_steps": 10,
                        "save_every": 100000},
              "evaluate": {"split": "test", "metrics": ["accuracy", "f1"]}}
    path = OUT / "sst2.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def recorded(kind: str) -> list[dict]:
    path = OUT / f"{kind}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def record(kind: str, row: dict):
    with (OUT / f"{kind}.jsonl").open("a") as handle:
        handle.write(json.dumps(row) + "\n")


def adaptctl_run(recipe: Path, run: Path, sets: list[str], stages: str = "prepare,train,evaluate") -> float:
    command = ["nice", "-n", "10", sys.executable, "-m", "adaptctl", "run", str(recipe), "--run-dir", str(run),
               "--stages", stages, "-q", *[arg for s in sets for arg in ("--set", s)]]
    clock = time.monotonic()
    done = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - clock


def read(run: Path, stage: str, name: str) -> dict:
    return json.loads((run / stage / name).read_text())


def dp():
    recipe = sst2_recipe()
    done = {(r["method"], r["epsilon"], r["seed"]) for r in recorded("dp")}
    for seed in SEEDS:
        for name, method in METHODS.items():
            for epsilon in EPSILONS:
                if (name, epsilon, seed) in done:
                    continue
                run = OUT / "runs" / f"sst2-{name}-{epsilon or 'none'}-{seed}"
                sets = [f"seed={seed}", f"method={json.dumps(method['method'])}", f"train.learning_rate={method['lr']}",
                        f"train.privacy={json.dumps({'epsilon': epsilon}) if epsilon else 'null'}"]
                wall = adaptctl_run(recipe, run, sets)
                train, metrics = read(run, "train", "manifest.json"), read(run, "evaluate", "metrics.json")
                row = {"method": name, "epsilon": epsilon, "seed": seed, "accuracy": metrics["metrics"]["accuracy"],
                       "f1": metrics["metrics"]["f1"], "train_seconds": train["train_seconds"], "steps": train["steps"],
                       "privacy": train.get("privacy"), "wall_seconds": round(wall, 1), "load": os.getloadavg()[0]}
                record("dp", row)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    {"dp": dp}[sys.argv[1]]()
