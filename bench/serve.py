"""adaptctl serve under load: 1, 4 and 16 concurrent clients against a batching server and against a
server that answers one request at a time (--batch-size 1), for the MiniLM quickstart classifier
(/classify, one ticket per request) and for SmolLM2 generation (a short LoRA run on DialogSum,
/v1/chat/completions through the official openai client, greedy, max_tokens 32).

Writes bench/RESULTS-serve.md (and bench/out/serve/results.json):

    python bench/serve.py [--classify-requests 128] [--generate-requests 32] [--repeats 2] [--threads 1]
                          [--only classifier|generator] [--classifier-run DIR] [--generator-run DIR]

Each cell is measured on one server process after two warm-up requests: rows/s (classification) or
generated tokens/s (generation), and p50/p95 request latency.  The two servers of a model run one
after the other on the same inputs, in swapped order on each repeat, so their ratio is a same-run
comparison that a changing load weighs on alike.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out" / "serve"
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "tests"))  # tests/serving.py: start a server on a free port, stop it

from serving import start  # noqa: E402  (found through the sys.path entry above)

CLIENTS = (1, 4, 16)
MODES = {"one at a time": ["--batch-size", "1"], "batched": ["--batch-size", "16"]}
GENERATE_TOKENS = 32


def train(recipe: Path, run_dir: Path, threads: int, stages: str | None = None):
    """The run (adaptctl run skips the stages already done for the same recipe)."""
    command = [sys.executable, "-m", "adaptctl", "run", str(recipe), "--run-dir", str(run_dir), "-q",
               "--threads", str(threads)]
    subprocess.run(command + (["--stages", stages] if stages else []), check=True, cwd=ROOT)


def tickets(count: int) -> list[str]:
    with (ROOT / "adaptctl" / "quickstart" / "tickets.csv").open(newline="") as f:
        return [row["text"] for row in csv.DictReader(f)][:count]


def dialogue_prompts(count: int) -> list[str]:
    """DialogSum test dialogues in the run's prompt (data.prompt), as a client renders them."""
    lines = (SHARED / "dialogsum" / "dialogsum.test.jsonl").read_text().splitlines()[:count]
    return [f"Summarize this dialogue in one sentence.\n\n{json.loads(line)['dialogue']}" for line in lines]


def classify(server, text: str) -> tuple[int, str]:
    status, body = server.post("/classify", {"model": server.model, "input": text})
    assert status == 200, body
    return 1, body["data"][0]["label"]


def generate(server, prompt: str) -> tuple[int, str]:
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model=server.model, max_tokens=GENERATE_TOKENS, temperature=0,
                                           messages=[{"role": "user", "content": prompt}])
    return reply.usage.completion_tokens, reply.choices[0].message.content


def load(server, ask, inputs: list[str], clients: int) -> dict:
    """`clients` threads sending the inputs (each the next one not yet sent) as fast as answers come."""
    latencies, answers, units, lock = [0.0] * len(inputs), [None] * len(inputs), [0] * len(inputs), threading.Lock()
    pending = iter(range(len(inputs)))

    def client():
        while True:
            with lock:
                index = next(pending, None)
            if index is None:
                return
            begun = time.monotonic()
            units[index], answers[index] = ask(server, inputs[index])
            latencies[index] = time.monotonic() - begun

    threads = [threading.Thread(target=client) for _ in range(clients)]
    begun = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - begun
    ordered = sorted(latencies)
    return {"clients": clients, "requests": len(inputs), "wall_seconds": round(wall, 2),
            "per_second": round(sum(units) / wall, 2), "p50": round(statistics.median(ordered), 3),
            "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 3), "answers": answers}


def serve_cells(run_dir: Path, flags: list[str], ask, inputs: list[str], threads: int) -> tuple[list[dict], dict]:
    """One server: its cells for 1, 4 and 16 clients, and its /health counters after them."""
    starting = start(run_dir, "--threads", str(threads), "--quiet", *flags)
    try:
        server = starting.ready(600)
        for text in inputs[:2]:
            ask(server, text)  # warm-up: the first batches pay for lazy initialisation
        return [load(server, ask, inputs, clients) for clients in CLIENTS], server.get("/health")[1]
    finally:
        starting.stop()


def measure(name: str, run_dir: Path, ask, inputs: list[str], threads: int, repeats: int) -> dict:
    """Both servers `repeats` times, their order swapped each time, so that a load that changes during the
    measurement weighs on both sides alike."""
    found = {"load_before": os.getloadavg()[0], "cells": {mode: [] for mode in MODES}}
    for repeat in range(repeats):
        for mode in (list(MODES) if repeat % 2 == 0 else list(reversed(MODES))):
            cells, found[f"{mode} health"] = serve_cells(run_dir, MODES[mode], ask, inputs, threads)
            found["cells"][mode].append(cells)
            for cell in cells:
                print(f"{name} repeat {repeat} {mode} {cell['clients']} clients: {cell['per_second']}/s "
                      f"p50 {cell['p50']} s p95 {cell['p95']} s", file=sys.stderr, flush=True)
    found["load_after"] = os.getloadavg()[0]
    return found


def _median(cells: list[dict], key: str) -> float:
    return round(statistics.median(cell[key] for cell in cells), 3)


def table(title: str, unit: str, found: dict) -> list[str]:
    repeats = len(found["cells"]["batched"])
    lines = [f"### {title}", "", (f"Load average {found['load_before']:.1f} before, {found['load_after']:.1f} after; "
             f"{repeats} repeat{'s' * (repeats != 1)}, medians shown; the ratio is each repeat's, in order."), "",
             (f"| clients | one at a time: {unit} | p50 s | p95 s | batched: {unit} | p50 s | p95 s | "
              "batched / one at a time | answers equal |"), "|---|---|---|---|---|---|---|---|---|"]
    for index, clients in enumerate(CLIENTS):
        alone = [cells[index] for cells in found["cells"]["one at a time"]]
        batched = [cells[index] for cells in found["cells"]["batched"]]
        ratios = ", ".join(f"{b['per_second'] / a['per_second']:.2f}x" for a, b in zip(alone, batched))
        same = sum(a == b for a, b in zip(alone[0]["answers"], batched[0]["answers"]))
        lines.append(f"| {clients} | {_median(alone, 'per_second')} | {_median(alone, 'p50')} | "
                     f"{_median(alone, 'p95')} | {_median(batched, 'per_second')} | {_median(batched, 'p50')} | "
                     f"{_median(batched, 'p95')} | {ratios} | {same}/{len(alone[0]['answers'])} |")
    health = found["batched health"]
    lines += ["", (f"The last batched server: {health['requests']} requests in {health['batches']} batches, "
                   f"the largest {health['largest_batch']} rows."), ""]
    return lines


TITLES = {"classifier": ("MiniLM quickstart classifier: /classify, one ticket per request, {n} requests per cell",
                         "rows/s"),
          "generator": (("SmolLM2-135M LoRA: /v1/chat/completions (openai client), DialogSum test dialogues, greedy, "
                        f"max_tokens {GENERATE_TOKENS}, {{n}} requests per cell"), "generated tokens/s")}


def write_results(results: dict, commands: dict, threads: int):
    lines = ["# Serving under load: adaptctl serve, batched against one request at a time", "",
             (f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {os.cpu_count()} CPU cores, "
              f"{threads} torch thread per server. The machine was shared with other jobs and heavily loaded (the "
              "load averages are in each section): absolute figures move with that load. The two servers of a "
              "model run one after the other on the same inputs, their order swapped between repeats; their ratio "
              "is the figure to read."), "",
             ("One at a time: `adaptctl serve --batch-size 1` (each request runs alone, in arrival order). "
              "Batched: `--batch-size 16`, gathering for up to 10 ms. Latency is the client's, request sent to "
              "answer read. \"Answers equal\": how many of the batched server's answers (first repeat) are the "
              "one-at-a-time server's (labels; greedy summaries, whose bf16 arithmetic depends on the rows a "
              "prompt shares its batch with)."), ""]
    for name, found in results.items():
        title, unit = TITLES[name]
        lines += [f"Command: `{commands[name]}`", ""]
        lines += table(title.format(n=len(found["cells"]["batched"][0][0]["answers"])), unit, found)
    (BENCH / "RESULTS-serve.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classify-requests", type=int, default=128)
    parser.add_argument("--generate-requests", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="each server this many times, alternating order")
    parser.add_argument("--only", choices=("classifier", "generator"), help="measure one model (keep the other's)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of each server")
    parser.add_argument("--classifier-run", type=Path, default=OUT / "quickstart",
                        help="a run of recipes/quickstart.yaml (trained here unless complete)")
    parser.add_argument("--generator-run", type=Path, default=OUT / "smollm2",
                        help="a run of bench/recipes/serve-smollm2.yaml (trained here unless complete)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    saved = OUT / "results.json"
    kept = json.loads(saved.read_text()) if saved.is_file() and args.only else {}
    results, commands = kept.get("results", {}), kept.get("commands", {})
    command = " ".join(["python bench/serve.py", *sys.argv[1:]])
    if args.only in (None, "classifier"):
        train(ROOT / "recipes" / "quickstart.yaml", args.classifier_run, args.threads)
        results["classifier"] = measure("classifier", args.classifier_run, classify,
                                        tickets(args.classify_requests), args.threads, args.repeats)
        commands["classifier"] = command
    if args.only in (None, "generator"):
        train(BENCH / "recipes" / "serve-smollm2.yaml", args.generator_run, args.threads, stages="prepare,train")
        results["generator"] = measure("generator", args.generator_run, generate,
                                       dialogue_prompts(args.generate_requests), args.threads, args.repeats)
        commands["generator"] = command
    saved.write_text(json.dumps({"results": results, "commands": commands}, indent=2))
    write_results(results, commands, args.threads)


if __name__ == "__main__":
    main()
