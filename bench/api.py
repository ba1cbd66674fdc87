"""API models on real data (issue 31), with `adaptctl serve` of SmolLM2-135M-Instruct as the API model:

1. SMS spam: the API model asked zero- and 4-shot (evaluate.baseline: {api}), against the MiniLM LoRA
   classifier trained on 60 messages and the majority class, on the same 40 test messages (sizes cut to
   what a loaded 2-core machine answers in a session: SmolLM2 answered one request in ~20 s under that load).
2. Sequence-level distillation: the same MiniLM LoRA student trained on the API teacher's labels of those
   60 messages (distill.teacher: {api}, alpha 1) against the student on the gold labels: test accuracy and
   agreement with the teacher.
(The DialogSum judge measurement is not in this script yet: RESULTS-api.md says so.)

Writes bench/RESULTS-api.md and bench/out/api/*.json:

    nice -n 10 python bench/api.py [--threads 1]

Every API answer is cached under each run directory, so running it again re-measures nothing it has
(delete bench/out/api to start over).
"""

from __future__ import annotations

import argparse
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
OUT = BENCH / "out" / "api"
RECIPES = BENCH / "recipes"
sys.path.insert(0, str(ROOT / "tests"))  # tests/serving.py: start a server, stop it

from serving import start  # noqa: E402  (found through the sys.path entry above)


def adaptctl(*args, threads: int) -> dict:
    """`adaptctl ARGS --json --threads N` -> its JSON line (raises on a non-zero exit)."""
    command = [sys.executable, "-m", "adaptctl", *map(str, args), "--json", "-q", "--threads", str(threads)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def metrics(run: Path) -> dict:
    return json.loads((run / "evaluate" / "metrics.json").read_text())


def timed(label: str, found: dict, action):
    start = time.monotonic()
    result = action()
    found.setdefault("seconds", {})[label] = round(time.monotonic() - start, 1)
    return result


def sms(threads: int, found: dict, base_url: str, command: str, few_shot: bool):
    """The classifier and its baselines (majority, the API model 0- and 4-shot), then the distilled student."""
    recipe, run = RECIPES / "api-sms-minilm.yaml", OUT / "sms-minilm"
    url = ["--set", f"evaluate.baseline.api.base_url={base_url}"]
    steps = [("api-0-shot", url), ("majority", ["--set", "evaluate.baseline=majority"])]
    if few_shot:
        steps.insert(1, ("api-4-shot", [*url, "--set", "evaluate.few_shot=4"]))
    for name, sets in steps:
        timed(f"sms {name}", found, lambda sets=sets: adaptctl("run", recipe, "--run-dir", run, "--stages",
                                                               "prepare,train,evaluate", *sets, threads=threads))
        found["sms"][name] = metrics(run)
        (OUT / f"sms-{name}.json").write_text(json.dumps(found["sms"][name], indent=2))
        write(found, command)
        print(f"{name}: {json.dumps(found['sms'][name].get('baseline', {}).get('metrics'))}", flush=True)
    distilled = OUT / "sms-distill"
    # The teacher's answers on the test split are the zero-shot baseline's requests: the same body to the same
    # endpoint, so the baseline run's cache answers them (the manifest counts them as cached, not made).
    if (run / "api_cache").is_dir() and not (distilled / "api_cache").exists():
        distilled.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / ".adaptctl-run", distilled / ".adaptctl-run")  # a run directory, as adaptctl made it
        shutil.copytree(run / "api_cache", distilled / "api_cache")
    timed("sms distill", found, lambda: adaptctl("run", RECIPES / "api-sms-distill.yaml", "--run-dir", distilled,
                                                 "--stages", "prepare,distill,evaluate", "--set",
                                                 f"distill.teacher.api.base_url={base_url}", threads=threads))
    found["sms"]["distill"] = metrics(distilled)
    found["sms"]["distill_manifest"] = json.loads((distilled / "distill" / "manifest.json").read_text())
    print(f"distill: {json.dumps(found['sms']['distill']['metrics'])}", flush=True)
    (OUT / "sms-distill.json").write_text(json.dumps(found["sms"]["distill"], indent=2))


def row(name: str, m: dict, keys=("accuracy", "precision", "recall", "f1")) -> str:
    return f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in keys) + " |"


def calls(api: dict | None) -> str:
    if not api:
        return "-"
    return (f"{api['calls_made']} made, {api['calls_cached']} cached, {api['calls_failed']} failed; "
            f"{api['tokens']:,} tokens; mean latency {api['mean_latency_seconds']} s")


def write(found: dict, command: str):
    """RESULTS-api.md from what has been measured so far; the rest is listed as not measured."""
    s, unmeasured = found["sms"], list(found.get("unmeasured", []))
    lines = ["# API models as baseline and teacher: SmolLM2-135M-Instruct behind adaptctl serve", "",
             (f"Measured {time.strftime('%Y-%m-%d')} by `{command}` on {platform.machine()} with {os.cpu_count()} CPU "
              f"cores, shared with other jobs (load average {found['load_before']:.1f} before, "
              f"{os.getloadavg()[0]:.1f} after). Accuracy figures do not depend on the load; latencies and seconds do."),
             "", ("The API model is SmolLM2-135M-Instruct as shipped (bench/recipes/api-smollm2-served.yaml: a LoRA of "
                  "one step at learning rate 1e-12, whose B matrices start at zero, so the served model is the base "
                  "model), served by `adaptctl serve` on 127.0.0.1 and called through the official `openai` client, "
                  "greedy, max_tokens 4, 8 requests in flight."), "",
             "## SMS spam: the adapted classifier against the API model", "",
             ("bench/recipes/api-sms-minilm.yaml: MiniLM + LoRA trained on 60 messages (5 epochs); the same 40 "
              "stratified test messages for every row; spam is the positive class. The API model is asked the "
              "recipe's `data.prompt` (\"SMS message: ... Is this message spam or ham? Answer with one word (ham, "
              "spam):\"), with 4 training messages and their labels as earlier turns for 4-shot; an answer that "
              "names no label counts as wrong."), "",
             "| model | accuracy | precision | recall | f1 |", "|---|---|---|---|---|"]
    adapted = next((s[k]["metrics"] for k in ("api-0-shot", "api-4-shot", "majority") if k in s), None)
    if adapted:
        lines.append(row("MiniLM LoRA (adapted)", adapted))
    for key, label in (("majority", "majority class"), ("api-0-shot", "API model, zero-shot"),
                       ("api-4-shot", "API model, 4-shot")):
        if key in s:
            lines.append(row(label, s[key]["baseline"]["metrics"]))
        else:
            unmeasured.append(f"- SMS spam, {label}: not run in this session (time: see the sizes above).")
    for key, label in (("api-0-shot", "zero-shot"), ("api-4-shot", "4-shot")):
        if key in s:
            b = s[key]["baseline"]
            lines += ["", (f"{label}: {b['unparsed']['count']} of {s[key]['num_examples']} answers named no label "
                           f"(counted wrong). Calls: {calls(b.get('api'))}.")]
    if "distill" in s:
        d, manifest = s["distill"], s["distill_manifest"]
        teacher = d.get("teacher") or {}
        lines += ["", "## Sequence-level distillation: the student on the API teacher's labels", "",
                  ("bench/recipes/api-sms-distill.yaml: the same MiniLM LoRA student and training settings (less the per-epoch "
                   "validation loss, which selects nothing here), on the "
                   "API model's zero-shot labels of the same 60 training messages (alpha 1: no gold label), "
                   "against the student on the gold labels (the classifier above). Messages whose answer named no "
                   "label are left out of the student's training set."), "",
                  "| student trained on | test accuracy | precision | recall | f1 |", "|---|---|---|---|---|",
                  *([row("gold labels", adapted)] if adapted else []), row("API teacher's labels", d["metrics"]),
                  row("(the teacher itself, zero-shot)", teacher.get("metrics", {})), "",
                  (f"Training rows taught by the teacher: {manifest.get('teacher_rows')} "
                   f"({manifest.get('unreadable_answers')} unreadable answers left out); the teacher's labels agree "
                   f"with the gold ones on {manifest.get('teacher_gold_agreement')} of them. The distilled student "
                   f"gives the teacher's answer on {teacher.get('agreement')} of the test messages."), "",
                  (f"Teacher calls while labelling: {calls((manifest.get('api') or {}).get('teacher'))}. "
                   f"On the test split: {calls(teacher.get('api'))}.")]
    else:
        unmeasured.append("- Sequence-level distillation (student on the API teacher's labels): the run did not get "
                          "to it in this session's time.")
    if found.get("seconds"):
        lines += ["", "## Wall time of each step (loaded machine)", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in found["seconds"].items()]
    lines += ["", "## Not measured here", "", *unmeasured]
    (BENCH / "RESULTS-api.md").write_text("\n".join(lines) + "\n")


def collected() -> dict:
    """What earlier runs of this script left in bench/out/api (for --write-only)."""
    found = {"sms": {}, "load_before": os.getloadavg()[0], "unmeasured": UNMEASURED}
    for key in ("api-0-shot", "api-4-shot", "majority", "distill"):
        if (OUT / f"sms-{key}.json").is_file():
            found["sms"][key] = json.loads((OUT / f"sms-{key}.json").read_text())
    if "distill" in found["sms"]:
        found["sms"]["distill_manifest"] = json.loads((OUT / "sms-distill" / "distill" / "manifest.json").read_text())
    return found


UNMEASURED = [
    ("- DialogSum judge win rate (a SmolLM2 LoRA against the base): not run; on this shared 2-core machine SmolLM2 "
    "generated about 2 tokens/s under load (bench/RESULTS-serve.md), and two judge calls per example with a "
    "dialogue in the prompt did not fit the session. The judge is covered by tests/test_api_models.py on a tiny model."),
    "- llama.cpp's server on the SmolLM2 GGUF: not run (same reason: time).",
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--few-shot", action="store_true", help="also the API model 4-shot (prompts 5x longer)")
    parser.add_argument("--write-only", action="store_true", help="write RESULTS-api.md from bench/out/api only")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    command = " ".join(["nice -n 10 python bench/api.py", *(a for a in sys.argv[1:] if a != "--write-only")])
    if args.write_only:
        return write(collected(), command)
    found = {"sms": {}, "load_before": os.getloadavg()[0], "unmeasured": UNMEASURED}
    served = OUT / "smollm2-served"
    timed("serve run", found, lambda: adaptctl("run", RECIPES / "api-smollm2-served.yaml", "--run-dir", served,
                                               "--stages", "prepare,train", threads=args.threads))
    server = start(served, "--threads", str(args.threads), "--batch-size", "8")
    try:
        ready = server.ready()
        assert ready.model == "api-smollm2-served", ready.model  # the name the recipes call it by
        sms(args.threads, found, ready.base_url, command, args.few_shot)
    finally:
        server.stop()
    (OUT / "results.json").write_text(json.dumps(found, indent=2, default=str))
    write(found, command)


if __name__ == "__main__":
    main()
