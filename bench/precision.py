"""Does bf16 autocast pay on this CPU, model by model? (issue 33.5: should `precision: auto` time it first?)

Times fp32 against bf16 autocast, interleaved (fp32, bf16, fp32, bf16, ...) so that the machine's load hits
both alike, on the workloads adaptctl runs: a MiniLM training step and inference batch, and SmolLM2-135M
inference, generation and a LoRA training step.  Reports the median of each and the ratio.

    nice -n 10 .venv/bin/python bench/precision.py          # writes bench/RESULTS-precision.md
    .venv/bin/python bench/precision.py table               # the table again from bench/out/precision.json
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
OUT = Path(__file__).resolve().parent / "RESULTS-precision.md"
RAW = Path(__file__).resolve().parent / "out" / "precision.json"


def _timed(step, precision: str) -> float:
    import torch

    context = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
    start = time.perf_counter()
    with context:
        step()
    return time.perf_counter() - start


def measure(name: str, step) -> dict:
    step()  # warm-up, untimed (allocations, oneDNN kernel choice)
    times = {"fp32": [], "bf16": []}
    for _ in range(REPEATS):
        for precision, found in times.items():
            found.append(_timed(step, precision))
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    row = {"workload": name, "fp32_s": fp32, "bf16_s": bf16, "speedup": fp32 / bf16}
    print(f"{name}: fp32 {fp32:.3f} s, bf16 {bf16:.3f} s, bf16 speedup {fp32 / bf16:.2f}x", file=sys.stderr)
    return row


def minilm_workloads() -> list[dict]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adaptctl.models.resolve import resolve_model

    path = str(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    batch = tokenizer(["a sentence of about twenty tokens that a review or a message would have in it ok"] * 32,
                      padding="max_length", max_length=64, truncation=True, return_tensors="pt")
    labels = torch.zeros(32, dtype=torch.long)

    def train_step():
        model.train()
        model(**batch, labels=labels).loss.backward()
        model.zero_grad()

    def infer():
        model.eval()
        with torch.no_grad():
            model(**batch)

    return [measure("MiniLM train step (32 x 64 tokens, full)", train_step),
            measure("MiniLM inference (32 x 64 tokens)", infer)]


def smollm_workloads() -> list[dict]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adaptctl.models.resolve import resolve_model

    path = str(resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    batch = tokenizer(["Summarize the dialogue between two people who talk about the weather today. " * 6] * 4,
                      max_length=128, truncation=True, padding="max_length", return_tensors="pt")
    prompt = tokenizer(["Question: what is seven plus five? Answer:"] * 4, return_tensors="pt")

    def infer():
        with torch.no_grad():
            model(**batch)

    def generate():
        with torch.no_grad():
            model.generate(**prompt, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.eos_token_id)

    rows = [measure("SmolLM2 forward (4 x 128 tokens)", infer), measure("SmolLM2 generate (4 x 16 new tokens)", generate)]
    lora = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules="all-linear"))

    def lora_step():
        lora.train()
        lora(**batch, labels=batch["input_ids"]).loss.backward()
        lora.zero_grad()

    return rows + [measure("SmolLM2 LoRA train step (4 x 128 tokens)", lora_step)]


def main():
    import json

    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    rows = minilm_workloads() + smollm_workloads()
    RAW.parent.mkdir(parents=True, exist_ok=True)
    RAW.write_text(json.dumps({"threads": torch.get_num_threads(), "repeats": REPEATS, "rows": rows}, indent=1))
    write_table()


def write_table():
    """bench/RESULTS-precision.md from bench/out/precision.json (`bench/precision.py table` rewrites it)."""
    import json

    measured = json.loads(RAW.read_text())
    rows = measured["rows"]
    how = (f"`nice -n 10 .venv/bin/python bench/precision.py`: {measured['threads']} thread(s), median of "
           f"{measured['repeats']} interleaved repeats after one warm-up; the machine is shared (2 cores, heavily loaded by "
           "other work), so the seconds are loose and the same-run ratio is the figure.")
    lines = ["# bf16 autocast against fp32 on this CPU (issue 33.5)", "", how, "",
             "| workload | fp32 s | bf16 autocast s | bf16 speed-up |", "|---|---|---|---|"]
    lines += [f"| {r['workload']} | {r['fp32_s']:.3f} | {r['bf16_s']:.3f} | {r['speedup']:.2f}x |" for r in rows]
    slowest = min(rows, key=lambda r: r["speedup"])
    if slowest["speedup"] > 1:
        verdict = (f"bf16 autocast was faster on every workload (the least gain: {slowest['speedup']:.2f}x, "
                   f"{slowest['workload']}). `precision: auto` therefore stays a capability check (bf16 where the CPU "
                   "has AVX512-BF16 or AMX, or the GPU bf16): a timing before each stage would choose bf16 for every "
                   "model measured here and only add its own seconds. metrics.json `scored_as` and the train "
                   "manifest's `precision` say what was used.")
    else:
        verdict = (f"bf16 autocast was not faster on {sum(r['speedup'] <= 1 for r in rows)} workload(s) "
                   f"({slowest['workload']}: {slowest['speedup']:.2f}x): there a timing before choosing would pay.")
    lines += ["", verdict]
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT.read_text())


if __name__ == "__main__":
    write_table() if sys.argv[1:] == ["table"] else main()
