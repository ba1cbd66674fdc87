"""adaptctl serve under load: 1, 4 and 16 concurrent clients against a batching server and against a
server that answers one request at a time (--batch-size 1), for the MiniLM quickstart classifier
(/classify, one ticket per request) and for SmolLM2 generation (a short LoRA run on DialogSum,
/v1/chat/completions through the official openai client, greedy, max_tokens 32).

Writes bench/RESULTS-serve.md (and bench/out/serve/results.json):

    python bench/serve.py [--classify-requests 128] [--generate-requests 32] [--threads 1]

Each cell is one server process, measured after two warm-up requests: rows/s (classification) or
generated tokens/s (generation), and p50/p95 request latency.  The two servers of a model run one
after the other on the same inputs, so their ratio is a same-run comparison.
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

from serving import start

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


def measure(name: str, run_dir: Path, ask, inputs: list[str], threads: int) -> dict:
    found = {}
    for mode, flags in MODES.items():
        starting = start(run_dir, "--threads", str(threads), "--quiet", *flags)
        try:
            server = starting.ready(600)
            for text in inputs[:2]:
                ask(server, text)  # warm-up: the first batches pay for lazy initialisation
            found[mode] = [load(server, ask, inputs, clients) for clients in CLIENTS]
            found[mode + " health"] = server.get("/health")[1]
        finally:
            starting.stop()
        for cell in found[mode]:
            print(f"{name} {mode} {cell['clients']} clients: {cell['per_second']}/s p50 {cell['p50']} s "
                  f"p95 {cell['p95']} s", file=sys.stderr, flush=True)
    return found


def table(name: str, unit: str, found: dict) -> list[str]:
    lines = [f"### {name}", "",
             (f"| clients | one at a time: {unit} | p50 s | p95 s | batched: {unit} | p50 s | p95 s | "
             "batched / one at a time | answers equal |"), "|---|---|---|---|---|---|---|---|---|"]
    for alone, batched in zip(found["one at a time"], found["batched"]):
        same = sum(a == b for a, b in zip(alone["answers"], batched["answers"]))
        lines.append(f"| {alone['clients']} | {alone['per_second']} | {alone['p50']} | {alone['p95']} | "
                     f"{batched['per_second']} | {batched['p50']} | {batched['p95']} | "
                     f"{batched['per_second'] / alone['per_second']:.2f}x | {same}/{len(alone['answers'])} |")
    health = found["batched health"]
    lines += ["", (f"Batched server over the whole cell set: {health['requests']} requests in {health['batches']} "
                  f"batches, the largest {health['largest_batch']} rows."), ""]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classify-requests", type=int, default=128)
    parser.add_argument("--generate-requests", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of each server")
    parser.add_argument("--classifier-run", type=Path, default=OUT / "quickstart",
                        help="a run of recipes/quickstart.yaml (trained here unless complete)")
    parser.add_argument("--generator-run", type=Path, default=OUT / "smollm2",
                        help="a run of bench/recipes/serve-smollm2.yaml (trained here unless complete)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    train(ROOT / "recipes" / "quickstart.yaml", args.classifier_run, args.threads)
    train(BENCH / "recipes" / "serve-smollm2.yaml", args.generator_run, args.threads, stages="prepare,train")
    load_before = os.getloadavg()
    results = {"classifier": measure("classifier", args.classifier_run, classify, tickets(args.classify_requests),
                                     args.threads),
               "generator": measure("generator", args.generator_run, generate,
                                    dialogue_prompts(args.generate_requests), args.threads)}
    load_after = os.getloadavg()
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    command = " ".join(["python bench/serve.py", *sys.argv[1:]])
    lines = ["# Serving under load: adaptctl serve, batched against one request at a time", "",
             (f"Measured {time.strftime('%Y-%m-%d')} by `{command}` on {platform.machine()} with {os.cpu_count()} "
             f"CPU cores, {args.threads} torch thread per server. The machine was shared with other jobs and "
             f"loaded: load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on "
             f"{os.cpu_count()} cores. Absolute figures move with that load; the ratio of the two servers, "
             "measured one after the other on the same inputs, is the figure to read."), "",
             ("One at a time: `adaptctl serve --batch-size 1` (each request runs alone, in arrival order). "
             "Batched: `--batch-size 16`, gathering for up to 10 ms. Latency is the client's, request sent to "
             "answer read. \"Answers equal\": how many answers of the batched server are the same as the "
             "one-at-a-time server's (labels; greedy summaries, whose bf16 numbers depend on the batch a row "
             "shares)."), ""]
    lines += table(f"MiniLM quickstart classifier: /classify, one ticket per request, {args.classify_requests} "
                   "requests per cell", "rows/s", results["classifier"])
    lines += table(f"SmolLM2-135M LoRA: /v1/chat/completions (openai client), DialogSum test dialogues, greedy, "
                   f"max_tokens {GENERATE_TOKENS}, {args.generate_requests} requests per cell", "generated tokens/s",
                   results["generator"])
    (BENCH / "RESULTS-serve.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
