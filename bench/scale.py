"""Data at scale (issue 38): how prepare's time and memory grow with the rows, against the fast tokenizer's
own throughput on the same texts, measured side by side in one run.  Results: bench/RESULTS-scale.md.

    python bench/scale.py run [--only rows,dialogsum,corpus,num_proc,validate,inference] [--sizes 10000,100000,1000000]
                              [--corpus-mb 10,100,1000] [--corpus-prepare-only 1000] [--note TEXT]
    python bench/scale.py report

The data are real text replicated to size (bench/scale_data.py) under SCALE_DIR (default /tmp/adaptctl-scale),
never in the repository.  Every measurement is one whole process under bench/measure.py (its wall seconds
and its own peak RSS); prepare's stage seconds come from its manifest.  Each prepare runs with empty
caches (ADAPTCTL_CACHE, HF_DATASETS_CACHE), so the CSV is parsed every time.  Each row of the results is
appended to SCALE_DIR/results.jsonl as it is measured; `report` writes the tables from them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
SCALE = Path(os.environ.get("SCALE_DIR", "/tmp/adaptctl-scale"))
RESULTS = SCALE / "results.jsonl"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"


def model_path(name: str) -> str:
    sys.path.insert(0, str(ROOT))
    from adaptctl.models.resolve import resolve_model

    return str(resolve_model(name).path)


def measured(command: list[str], env: dict | None = None) -> dict:
    """The command under bench/measure.py, niced (the machine is shared): wall seconds, peak RSS MB, stdout."""
    done = subprocess.run(["nice", "-n", "10", PYTHON, str(BENCH / "measure.py"), "--", *command], check=False, cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def record(row: dict):
    row = {**row, "at": dt.datetime.now().isoformat(timespec="seconds"), "load_after": round(os.getloadavg()[0], 2)}
    with open(RESULTS, "a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def commit() -> str:
    """The code measured: HEAD, with '+' where the work tree differs from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return head + ("+" if dirty else "")


def data_file(kind: str, amount: int) -> Path:
    suffix = {"agnews": "csv", "dialogsum": "jsonl", "corpus": "txt"}[kind]
    path = SCALE / f"{kind}-{amount}.{suffix}"
    if not path.exists():
        subprocess.run([PYTHON, str(BENCH / "scale_data.py"), kind, str(amount), str(path)], check=True)
    return path


def tokenizer_side(kind: str, path: Path, model: str) -> dict:
    found = measured([PYTHON, str(BENCH / "scale_tokenizer.py"), kind, str(path), model_path(model)])
    return {**json.loads(found["child_stdout"]), "seconds": found["seconds"], "rss_mb": found["rss_mb"],
            "anon_mb": found["anon_mb"]}


def prepare_side(recipe: str, path: Path, sets: list[str] = ()) -> dict:
    """adaptctl prepare with an empty prepared-data cache: process seconds and RSS, the stage's seconds, rows and
    tokens.  adaptctl's model cache is kept (SCALE/models): SmolLM2 comes as GGUF, converted once into it, and
    that one-off conversion (a model load, ~1.2 GB) is not prepare's work."""
    work = SCALE / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {"ADAPTCTL_CACHE": str(SCALE / "models"), "HF_DATASETS_CACHE": str(work / "hf"), "PYTHONPATH": str(ROOT)}
    shutil.rmtree(SCALE / "models" / "prepared", ignore_errors=True)
    command = [PYTHON, "-m", "adaptctl", "prepare", str(BENCH / "recipes" / recipe), "--run-dir", str(work / "run"),
               "--set", f"data.source.path={path}", *[a for s in sets for a in ("--set", s)], "--quiet"]
    found = measured(command, env)
    manifest = json.loads((work / "run" / "prepare" / "manifest.json").read_text())
    stats = json.loads((work / "run" / "prepare" / "stats.json").read_text())
    stage = (dt.datetime.fromisoformat(manifest["finished_at"]) - dt.datetime.fromisoformat(manifest["started_at"]))
    splits = stats["splits"].values()
    shutil.rmtree(work, ignore_errors=True)
    return {"seconds": found["seconds"], "rss_mb": found["rss_mb"], "anon_mb": found["anon_mb"],
            "stage_seconds": stage.total_seconds(),
            "rows": sum(s["rows"] for s in splits), "tokens": sum(s["tokens"] for s in splits),
            "blocks": sum((s.get("packing") or {}).get("blocks", 0) for s in splits)}


def prepare_growth(workload: str, kind: str, sizes: list[int], recipe: str, model: str, sets=(), alone=()):
    """Per size: the tokenizer alone, then prepare, right after it on the same file (sizes in `alone`: prepare
    only, when the machine's time is short)."""
    for size in sizes:
        path = data_file(kind, size)
        if size not in alone:
            record({"measure": "tokenizer", "workload": workload, "size": size, "bytes": path.stat().st_size,
                    **tokenizer_side(kind, path, model)})
        record({"measure": "prepare", "workload": workload, "size": size, "bytes": path.stat().st_size,
                **prepare_side(recipe, path, sets)})


def num_proc(rows: int = 100_000, repeats: int = 2):
    """The tokenize map of prepare (classification's encode) with num_proc 1 and 2, alternating."""
    path = data_file("agnews", rows)
    for _ in range(repeats):
        for procs in (1, 2):
            found = measured([PYTHON, str(BENCH / "scale_num_proc.py"), str(path), model_path(MINILM), str(procs)],
                             {"PYTHONPATH": str(ROOT), "HF_DATASETS_CACHE": str(SCALE / "work-num-proc")})
            shutil.rmtree(SCALE / "work-num-proc", ignore_errors=True)
            record({"measure": "num_proc", "rows": rows, "num_proc": procs, **json.loads(found["child_stdout"]),
                    "seconds": found["seconds"], "rss_mb": found["rss_mb"]})


def validate_peek(sizes_mb: list[int]):
    """adaptctl validate on the plain-text recipe over corpora of each size: its data peek must not read the file."""
    for size in sizes_mb:
        path = data_file("corpus", size * 10**6)
        found = measured([PYTHON, "-m", "adaptctl", "validate", str(BENCH / "recipes" / "scale-corpus.yaml"),
                          "--set", f"data.source.path={path}"], {"PYTHONPATH": str(ROOT)})
        record({"measure": "validate", "bytes": path.stat().st_size, "seconds": found["seconds"], "rss_mb": found["rss_mb"]})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["run", "report"])
    parser.add_argument("--only", default="rows,dialogsum,corpus,num_proc,validate,inference")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dialogsum-sizes", default="10000,100000")
    parser.add_argument("--corpus-mb", default="10,100,1000")
    parser.add_argument("--prepare-only", default="", help="sizes measured without the tokenizer-alone side")
    parser.add_argument("--corpus-prepare-only", default="", help="corpus MB measured without the tokenizer-alone side")
    parser.add_argument("--note", default="", help="what else ran on the machine, printed in the report")
    args = parser.parse_args()
    if args.action == "report":
        from scale_report import write_report

        write_report(RESULTS, BENCH / "RESULTS-scale.md")
        return
    SCALE.mkdir(parents=True, exist_ok=True)
    only = args.only.split(",")
    record({"measure": "machine", "host": platform.node(), "cpus": os.cpu_count(), "load": os.getloadavg()[0],
            "python": platform.python_version(), "started": time.time(), "note": args.note, "commit": commit()})
    if "validate" in only:
        validate_peek([int(s) for s in args.corpus_mb.split(",")])
    if "corpus" in only:
        alone = {int(s) * 10**6 for s in args.corpus_prepare_only.split(",") if s}
        prepare_growth("corpus", "corpus", [int(s) * 10**6 for s in args.corpus_mb.split(",")], "scale-corpus.yaml",
                       SMOLLM, alone=alone)
    if "inference" in only:
        from scale_inference import run_inference

        run_inference(SCALE, record, measured, data_file)
    if "num_proc" in only:
        num_proc()
    if "dialogsum" in only:
        prepare_growth("dialogsum", "dialogsum", [int(s) for s in args.dialogsum_sizes.split(",")],
                       "scale-dialogsum.yaml", SMOLLM)
    if "rows" in only:  # last: the longest
        alone = {int(s) for s in args.prepare_only.split(",") if s}
        prepare_growth("agnews", "agnews", [int(s) for s in args.sizes.split(",")], "scale-agnews.yaml", MINILM,
                       alone=alone)


if __name__ == "__main__":
    main()
