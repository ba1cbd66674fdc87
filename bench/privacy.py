"""Privacy benchmarks (bench/RESULTS-privacy.md): what DP-SGD costs and buys, measured on real data.

    python bench/privacy.py dp [lora:8 full:none ...]  # SST-2, MiniLM LoRA and full: accuracy with and without DP
    BENCH_SEEDS=2,3 python bench/privacy.py dp lora:none lora:8   # the same runs for other seeds
    python bench/privacy.py counts                     # SMS spam: PII per kind over every message (no training)
    python bench/privacy.py pii [report|redact]        # SMS spam: the classifier on redacted against raw text
    python bench/privacy.py canaries [none|8]          # SmolLM2 LoRA on DialogSum with canaries: exposure, ROUGE-L
    python bench/privacy.py report    # bench/RESULTS-privacy.md from bench/out/privacy/*.jsonl

Each run is `adaptctl run` on a recipe under bench/out/privacy (written here from the shared data) with
--set overrides, under `nice -n 10`; one JSON line per run goes to bench/out/privacy/<kind>.jsonl, and a
run already recorded is skipped, so the command can be stopped and run again; naming runs on the command
line runs only those (several commands at once share the machine's cores between them).
"""

from __future__ import annotations

import json
import math
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

# SST-2: SST2_TRAIN_ROWS training sentences (of 6,920) cut to 64 tokens, all 872 dev sentences as the test split;
# 1 epoch of batches of 32 (Poisson batches of 32 expected rows under DP).  The classifier is `method: {name: lora}`
# with the product's defaults (target modules, pooling and learning rate unset: r 8 on every linear layer, mean
# pooling, 1e-3; bench/RESULTS-defaults.md), what a user who adds only train.privacy gets; DP keeps that rate.
SST2_TRAIN_ROWS, SST2_TEST_ROWS, SST2_MAX_LENGTH, BATCH = 3000, 872, 64, 32
# (method, epsilon) in the order they run; None: without DP.  "lora" is the defaults (no method override).
# lora-b256x3: the same LoRA with the batch DP-SGD asks for (the noise on the mean gradient shrinks as 1 / batch)
# and 3 epochs (36 steps), run beside its own non-private twin.
RUNS = (("lora", None), ("lora", 8.0), ("lora", 1.0), ("lora", 3.0), ("lora-b256x3", None), ("lora-b256x3", 8.0),
        ("lora-b256x3", 1.0), ("full", None), ("full", 8.0), ("full", 3.0), ("full", 1.0))
# BENCH_SEEDS=1,2 runs the table for more seeds (the records already there are skipped).
SEEDS = tuple(int(seed) for seed in os.environ.get("BENCH_SEEDS", "1").split(","))
METHODS: dict[str, list[str]] = {"lora": [], "lora-b256x3": ["train.batch_size=256", "train.epochs=3"],
                                 "full": ['method={"name": "full"}', "train.learning_rate=1e-4"]}
# One thread per run: on the shared 2-core machine two OpenMP threads spin against each other's neighbours.
THREADS = os.environ.get("BENCH_THREADS", "1")


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
                       "splits": {"validation": 0.0, "test": 0.0, "seed": 1}, "max_length": SST2_MAX_LENGTH,
                       "max_train_samples": SST2_TRAIN_ROWS, "max_eval_samples": SST2_TEST_ROWS},
              "method": {"name": "lora"},
              "train": {"epochs": 1, "batch_size": BATCH, "precision": "auto", "validate": False, "logging_steps": 5,
                        "save_every": 100000},
              "evaluate": {"split": "test", "metrics": ["accuracy", "f1"], "baseline": "none"}}
    return written("sst2", recipe)


def written(name: str, recipe: dict) -> Path:
    path = OUT / f"{name}.yaml"
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
               "--stages", stages, "--threads", THREADS, "-q", *[arg for s in sets for arg in ("--set", s)]]
    clock = time.monotonic()
    done = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - clock


def read(run: Path, stage: str, name: str) -> dict:
    return json.loads((run / stage / name).read_text())


def dp(*only: str):
    recipe = sst2_recipe()
    done = {(r["method"], r["epsilon"], r["seed"]) for r in recorded("dp")}
    for seed in SEEDS:
        for name, epsilon in RUNS:
            if only and f"{name}:{'none' if epsilon is None else f'{epsilon:g}'}" not in only:
                continue
            if (name, epsilon, seed) not in done:
                run = OUT / "runs" / f"sst2-{name}-{epsilon or 'none'}-{seed}"
                sets = [f"seed={seed}", *METHODS[name],
                        f"train.privacy={json.dumps({'epsilon': epsilon}) if epsilon else 'null'}"]
                load = os.getloadavg()[0]
                wall = adaptctl_run(recipe, run, sets)
                train, metrics = read(run, "train", "manifest.json"), read(run, "evaluate", "metrics.json")
                row = {"method": name, "epsilon": epsilon, "seed": seed, "accuracy": metrics["metrics"]["accuracy"],
                       "f1": metrics["metrics"]["f1"], "train_seconds": train["train_seconds"], "steps": train["steps"],
                       "privacy": train.get("privacy"), "wall_seconds": round(wall, 1), "threads": THREADS,
                       "load": [round(load, 2), round(os.getloadavg()[0], 2)]}
                record("dp", row)
                print(json.dumps(row), flush=True)


# SMS spam: PII counted over all 5,574 messages; the classifier (`method: {name: lora}` with the defaults, as for
# SST-2, and class_weights: auto for the 13% of spam, as bench/RESULTS-defaults.md measured it; 1,200 training
# messages, 1 epoch, batches of 32) on raw against redacted text, scored on the same stratified 20% test split
# (1,115 messages, redacted too in the redacted run).
SMS_TRAIN_ROWS = 1200


def sms_recipe() -> Path:
    recipe = {"name": "privacy-sms", "task": "classification", "seed": 1,
              "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
              "data": {"source": {"path": str(SHARED / "sms_spam" / "SMSSpamCollection"), "format": "tsv",
                                  "header": False, "names": ["label", "text"], "quoting": 3},
                       "text": "text", "label": "label",
                       "splits": {"validation": 0.0, "test": 0.2, "stratify": True, "seed": 1},
                       "max_length": 64, "max_train_samples": SMS_TRAIN_ROWS, "pii": {"action": "report"}},
              "method": {"name": "lora"},
              "train": {"epochs": 1, "batch_size": BATCH, "precision": "auto", "validate": False,
                        "class_weights": "auto", "save_every": 100000},
              "evaluate": {"split": "test", "metrics": ["accuracy", "f1"], "positive_label": "spam", "baseline": "none"}}
    return written("sms", recipe)


def pii_counts():
    """PII per kind in every SMS spam message, by the detector prepare uses (no training)."""
    sys.path.insert(0, str(ROOT))
    from adaptctl.data import pii as detector

    texts = [line.split("\t", 1)[1] for line in (SHARED / "sms_spam" / "SMSSpamCollection").read_text(
        encoding="utf-8").splitlines() if "\t" in line]
    kinds, tally = tuple(detector.KINDS), None
    tally = detector.Tally(kinds)
    clock = time.monotonic()
    for text in texts:
        spans = detector.find(text, kinds)
        tally.add("text", text, spans)
        tally.rows += bool(spans)
    row = {"messages": len(texts), "seconds": round(time.monotonic() - clock, 1), **tally.document("report")}
    (OUT / "pii-counts.json").write_text(json.dumps(row, indent=2))
    print(json.dumps(row), flush=True)


def pii(*only: str):
    recipe = sms_recipe()
    done = {r["action"] for r in recorded("pii")}
    for action in ("report", "redact"):
        if action in done or (only and action not in only):
            continue
        run = OUT / "runs" / f"sms-{action}"
        wall = adaptctl_run(recipe, run, [f"data.pii.action={action}"])
        stats, metrics = read(run, "prepare", "stats.json"), read(run, "evaluate", "metrics.json")
        row = {"action": action, "pii": stats["pii"], "accuracy": metrics["metrics"]["accuracy"],
               "f1": metrics["metrics"]["f1"], "test_rows": metrics["num_examples"], "wall_seconds": round(wall, 1)}
        record("pii", row)
        print(json.dumps(row), flush=True)


# DialogSum: SmolLM2-135M-Instruct with the product's LoRA defaults on the 500 dev dialogues (the 12k-row train
# file is not in ../shared) plus 20 canaries planted 4 times each, 2 epochs of batches of 16 (Poisson batches of
# 16 expected rows under DP) at learning rate 1e-3 (the causal-lm default 2e-4 barely moves LoRA in 72 steps);
# ROUGE-L on the first 50 test dialogues; exposure of the 20 canaries among 1,000
# random candidates.  The same recipe with and without train.privacy, so the difference is DP's alone.
CANARY_TEST_DIALOGUES = 50
# The mean exposure of a canary whose rank among 1,000 candidates is uniform (nothing memorised): log2 1001
# minus the mean of log2 k over k = 1..1001, which is about log2 e.
CHANCE = math.log2(1001) - sum(math.log2(k) for k in range(1, 1002)) / 1001


def dialogsum_recipe() -> Path:
    recipe = {"name": "privacy-dialogsum", "task": "causal-lm", "seed": 1,
              "model": {"base": "HuggingFaceTB/SmolLM2-135M-Instruct"},
              "data": {"source": str(SHARED / "dialogsum" / "dialogsum.dev.jsonl"),
                       "test": str(SHARED / "dialogsum" / "dialogsum.test.jsonl"),
                       "prompt": "Summarize this dialogue in one sentence.\n\n{dialogue}", "response": "{summary}",
                       "chat_template": True, "splits": {"validation": 0.0, "test": 0.0, "seed": 1},
                       "max_length": 256},
              "method": {"name": "lora"},
              "train": {"epochs": 2, "batch_size": 16, "learning_rate": 1e-3, "precision": "auto", "validate": False,
                        "logging_steps": 4, "save_every": 100000},
              "evaluate": {"split": "test", "metrics": ["rougeL"], "canaries": 20, "canary_copies": 4, "batch_size": 16,
                           "max_examples": CANARY_TEST_DIALOGUES, "generation": {"max_new_tokens": 64}}}
    return written("dialogsum", recipe)


def canaries(*only: str):
    recipe = dialogsum_recipe()
    done = {r["epsilon"] for r in recorded("canaries")}
    for epsilon in (None, 8.0):
        if epsilon in done or (only and ("none" if epsilon is None else f"{epsilon:g}") not in only):
            continue
        run = OUT / "runs" / f"dialogsum-{epsilon or 'none'}"
        sets = [f"train.privacy={json.dumps({'epsilon': epsilon}) if epsilon else 'null'}"]
        wall = adaptctl_run(recipe, run, sets)
        train, metrics = read(run, "train", "manifest.json"), read(run, "evaluate", "metrics.json")
        found = metrics["canaries"]
        row = {"epsilon": epsilon, "rougeL": metrics["metrics"]["rougeL"], "mean_exposure": found["mean_exposure"],
               "max_exposure": found["max_exposure"], "exposures": found["exposures"],
               "max_possible": found["max_possible"], "train_seconds": train["train_seconds"],
               "privacy": train.get("privacy"), "wall_seconds": round(wall, 1), "load": os.getloadavg()[0]}
        record("canaries", row)
        print(json.dumps(row), flush=True)


def report():
    lines = ["# Privacy benchmarks", "",
             "Written by `python bench/privacy.py report` from the runs of `python bench/privacy.py dp|pii|canaries`",
             "(bench/privacy.py holds every setting; one JSON line per run in bench/out/privacy/*.jsonl). Each run is",
             f"`adaptctl run` under `nice -n 10` with `--threads {THREADS}` on a 2-core CPU shared with other jobs; the load",
             "average at each run's start and end is recorded beside it. Seconds are slow and noisy there: only",
             "ratios between runs of one table, run one after the other, say something. Accuracy, F1, ROUGE-L and",
             "exposure do not depend on the load.", ""]
    lines += dp_section(recorded("dp")) + canary_section(recorded("canaries")) + pii_section(recorded("pii"))
    lines += missing_section()
    (BENCH / "RESULTS-privacy.md").write_text("\n".join(lines) + "\n")


def missing_section() -> list[str]:
    """The runs not recorded yet, as the commands that make them."""
    dp_done = {(r["method"], r["epsilon"]) for r in recorded("dp")}
    commands = [f"python bench/privacy.py dp {' '.join(runs)}" for runs in
                [[f"{m}:{'none' if e is None else f'{e:g}'}" for m, e in RUNS if (m, e) not in dp_done]] if runs]
    if {r["epsilon"] for r in recorded("canaries")} != {None, 8.0}:
        commands.append("python bench/privacy.py canaries")
    if {r["action"] for r in recorded("pii")} != {"report", "redact"}:
        commands.append("python bench/privacy.py pii")
    if not commands:
        return []
    return ["## Not measured yet", "",
            ("These were not run in the session's time on the shared machine (the DP table came first, then PII). "
             "Each command records its runs and the report picks them up:"), "", *(f"    {c}" for c in commands), "    python bench/privacy.py report", ""]


def dp_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    spent = next((r["privacy"] for r in rows if r.get("privacy")), {})
    lines = ["## DP-SGD on SST-2 (MiniLM)", "",
             (f"all-MiniLM-L6-v2, {SST2_TRAIN_ROWS} SST-2 training sentences (max {SST2_MAX_LENGTH} tokens), batches of "
              f"{BATCH} for 1 epoch unless the method's name says otherwise (Poisson batches of that many rows expected "
              "under DP), accuracy and F1 on the "
              f"{SST2_TEST_ROWS} dev sentences. `lora` is `method: {{name: lora}}` with the product's defaults (r 8 on "
              "every linear layer, mean pooling, learning rate 1e-3), `lora-b256x3` the same with batches of 256 for 3 epochs, "
              "`full` is full fine-tuning at 1e-4; the private "
              "runs add only `train.privacy: {epsilon: E}`: prv accountant, per-example clip 1.0, "
              f"delta {spent.get('delta', 'its default')}, the learning rate unchanged. Seeds "
              f"{', '.join(str(seed) for seed in sorted({r['seed'] for r in rows}))} "
              "(the recipe seed sets the initialisation and shuffling; DP's sampling and noise come from the operating "
              "system). The positive class for F1 is `positive`. The train seconds exclude loading and evaluation; "
              "x non-private divides them by the same method's run without DP and seed."), "",
             "| method | seed | epsilon (target) | epsilon spent | noise multiplier | steps | accuracy | F1 | classes predicted "
             "| train s | x non-private | load (start, end) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    plain = {(r["method"], r["seed"]): r["train_seconds"] for r in rows if r["epsilon"] is None}
    for r in sorted(rows, key=lambda r: (r["method"], r["seed"], -(r["epsilon"] or 1e9))):
        p = r.get("privacy") or {}
        base = plain.get((r["method"], r["seed"]))
        ratio = f"{r['train_seconds'] / base:.2f}" if base else "n/a"
        lines.append(f"| {r['method']} | {r['seed']} | {r['epsilon'] or 'no DP'} | {p.get('epsilon', '-')} | "
                     f"{p.get('noise_multiplier', '-')} | {r['steps']} | {r['accuracy']:.4f} | {r['f1']:.4f} | "
                     f"{predicted_classes(r)} | {r['train_seconds']:.0f} | {ratio} | {', '.join(map(str, r['load']))} |")
    lines += seed_summary(rows)
    if any(predicted_classes(r) == 1 for r in rows):
        lines += ["", ("A model that predicts one class for every sentence has learned nothing: such a row says "
                       "nothing about what DP costs.")]
    return lines + [""]


def seed_summary(rows: list[dict]) -> list[str]:
    """Accuracy over the seeds of each (method, epsilon) that ran with more than one."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["epsilon"]), []).append(r["accuracy"])
    several = {key: found for key, found in groups.items() if len(found) > 1}
    if not several:
        return []
    lines = ["", "Over the seeds:", "", "| method | epsilon (target) | seeds | mean accuracy | lowest | highest |",
             "|---|---|---|---|---|---|"]
    for (method, epsilon), found in sorted(several.items(), key=lambda item: (item[0][0], -(item[0][1] or 1e9))):
        lines.append(f"| {method} | {epsilon or 'no DP'} | {len(found)} | {sum(found) / len(found):.4f} | "
                     f"{min(found):.4f} | {max(found):.4f} |")
    return lines


def predicted_classes(row: dict) -> int:
    """How many labels the run's model predicted on the test split (1: the same for every sentence)."""
    run = OUT / "runs" / f"sst2-{row['method']}-{row['epsilon'] or 'none'}-{row['seed']}"
    lines = (run / "evaluate" / "predictions.jsonl").read_text().splitlines()
    return len({json.loads(line)["prediction"] for line in lines})


def canary_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    run = OUT / "runs" / "dialogsum-none"
    from ruamel.yaml import YAML

    recipe, train = YAML(typ="safe").load(run / "recipe.yaml"), read(run, "train", "manifest.json")
    rows_trained = read(run, "prepare", "stats.json")["splits"]["train"]["rows"]
    lines = ["## Canaries on DialogSum (SmolLM2-135M-Instruct, LoRA)", "",
             (f"{rows_trained} training rows: DialogSum's 500 dev dialogues and {recipe['evaluate']['canaries']} canaries "
              f"(\"My account number is\" and 12 random digits) planted {recipe['evaluate']['canary_copies']} times each; "
              f"max {recipe['data']['max_length']} tokens, {recipe['train']['epochs']} epochs of batches of "
              f"{train['global_batch_size']} ({train['steps']} steps without DP), LoRA with the product's defaults "
              f"(r {recipe['method']['r']} on {', '.join(train['adapted_modules']['target_modules'])}), learning rate "
              f"{recipe['train']['learning_rate']:g}; ROUGE-L on the first {recipe['evaluate']['max_examples']} test "
              f"dialogues (best of three references, {recipe['evaluate']['generation']['max_new_tokens']} new tokens, "
              "greedy); exposure of each canary among 1,000 random candidates of the same shape (at most 9.97 bits; "
              f"{CHANCE:.2f} bits on average, log2 e, for a model that learnt nothing of them). What DP costs in "
              "time is in the SST-2 table above: these two runs shared the machine unevenly (the one without DP was "
              "paused for another benchmark), so their seconds are not shown."), "",
             "| training | epsilon spent (delta) | noise multiplier | ROUGE-L | mean exposure | max exposure | canaries above 5 bits |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["epsilon"] or 0):
        p = r.get("privacy") or {}
        spent = f"{p['epsilon']} ({p['delta']:g})" if p else "-"
        lines.append(f"| {'DP-SGD, epsilon ' + str(r['epsilon']) if r['epsilon'] else 'no DP'} | {spent} | "
                     f"{p.get('noise_multiplier', '-')} | {r['rougeL']:.4f} | {r['mean_exposure']:.2f} | {r['max_exposure']:.2f} | "
                     f"{sum(e > 5 for e in r['exposures'])} of {len(r['exposures'])} |")
    found = {r["epsilon"]: r for r in rows}
    if None in found and 8.0 in found:
        plain, private = found[None], found[8.0]
        lines += ["", (f"DP-SGD at epsilon 8 brought the mean exposure from {plain['mean_exposure']:.2f} to "
                       f"{private['mean_exposure']:.2f} bits (chance: {CHANCE:.2f}) and the canaries above 5 bits from "
                       f"{sum(e > 5 for e in plain['exposures'])} to {sum(e > 5 for e in private['exposures'])}, at a "
                       f"ROUGE-L cost of {plain['rougeL'] - private['rougeL']:.3f} ({plain['rougeL']:.3f} -> "
                       f"{private['rougeL']:.3f}).")]
    return lines + [""]


def pii_section(rows: list[dict]) -> list[str]:
    counts = OUT / "pii-counts.json"
    if not rows and not counts.exists():
        return []
    found = json.loads(counts.read_text()) if counts.exists() else rows[0]["pii"]
    lines = ["## PII in SMS spam", "",
             (f"adaptctl's detector (data/pii.py: Presidio's pattern recognizers) over the text of all 5,574 messages "
              f"(`python bench/privacy.py counts`): {found['rows']} messages hold some."), "",
             "| kind | found |", "|---|---|"] + [f"| {k} | {n} |" for k, n in found["counts"].items()]
    lines += ["", "Examples as the report shows them (redacted):", ""] + [f"- `{e}`" for e in found["examples"]]
    if not rows:
        return lines + [""]
    prepared = rows[0]["pii"]
    lines += ["", (f"The classifier (`method: {{name: lora}}` with the product's defaults, `class_weights: auto`), "
                   f"{SMS_TRAIN_ROWS} training messages (max 64 tokens), 1 epoch of batches of {BATCH}, seed 1, on the "
                   f"same stratified {rows[0]['test_rows']} test messages (redacted too in the redacted run); prepare's "
                   f"scan (prepare/stats.json, before the split and the row limit) found PII in {prepared['rows']} rows ("
                   + ", ".join(f"{k} {n}" for k, n in prepared["counts"].items() if n) + ")."), "",
              "| text | accuracy | F1 (spam) |", "|---|---|---|"]
    lines += [f"| {'raw' if r['action'] == 'report' else 'PII redacted'} | {r['accuracy']:.4f} | {r['f1']:.4f} |"
              for r in sorted(rows, key=lambda r: r["action"] != "report")]
    return lines + [""]


if __name__ == "__main__":
    {"dp": dp, "pii": pii, "counts": pii_counts, "canaries": canaries, "report": report}[sys.argv[1]](*sys.argv[2:])
