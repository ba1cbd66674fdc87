"""GGUF export of a real run, measured: bench/RESULTS-gguf.md.

    python bench/gguf.py RUN_DIR [--no-speed]   # after `adaptctl run bench/recipes/gguf-smollm2-lora.yaml --run-dir RUN_DIR`

Reads what export's own check recorded (export/manifest.json: sizes, largest logit differences, greedy
agreement in transformers and llama.cpp on 10 test prompts) and times generation on the same prompts in
one process, one runtime after the other: transformers on the exported safetensors folder (fp32, as
`adaptctl predict` runs it on a CPU) against llama.cpp on each GGUF file, 64 greedy tokens a prompt,
one prompt at a time.  Ratios are of the same run; the machine is shared, so seconds are noisy.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

NEW_TOKENS = 64


def main(run_dir: Path, speed: bool = True):
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adaptctl.export import gguf_check

    folder = run_dir / "export" / "model"
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    data = load_from_disk(str(run_dir / "prepare" / "data"))
    prompts = gguf_check.prompts_of(data["test"])
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    stops = sorted(gguf_check.stop_ids(model, tokenizer))
    speeds = {"transformers fp32 (safetensors)": _transformers(model, prompts, stops)} if speed else {}
    for kind, entry in manifest["gguf"]["files"].items() if speed else ():
        speeds[f"llama.cpp {kind} (GGUF)"] = _llama_cpp(folder / entry["file"], prompts, stops)
    (Path(__file__).parent / "RESULTS-gguf.md").write_text(_report(run_dir, manifest, speeds, len(prompts)))


def _transformers(model, prompts, stops) -> dict:
    import torch

    start, tokens = time.monotonic(), 0
    for prompt in prompts:
        with torch.inference_mode():
            out = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                 eos_token_id=stops, pad_token_id=stops[0])
        tokens += out.shape[1] - len(prompt)
    return {"tokens": tokens, "seconds": time.monotonic() - start}


def _llama_cpp(path: Path, prompts, stops) -> dict:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=max(len(p) for p in prompts) + NEW_TOKENS + 8,
                n_threads=os.cpu_count() or 1, verbose=False)
    start, tokens = time.monotonic(), 0
    for prompt in prompts:
        for n, _ in enumerate(llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True), 1):
            if n >= NEW_TOKENS:  # as transformers above: NEW_TOKENS whatever the model says (no stop)
                break
        tokens += NEW_TOKENS
    seconds = time.monotonic() - start
    llm.close()
    return {"tokens": tokens, "seconds": seconds}


def _report(run_dir: Path, manifest: dict, speeds: dict, prompts: int) -> str:
    files = manifest["gguf"]["files"]
    safetensors = manifest["weights_bytes"]
    lines = ["# GGUF export of a SmolLM2 LoRA run", "",
             ("Produced by `adaptctl run bench/recipes/gguf-smollm2-lora.yaml --run-dir RUN_DIR` then "
             f"`python bench/gguf.py RUN_DIR` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} shared CPU cores under other "
             f"helpers' load, load average {os.getloadavg()[1]:.1f} over the last 5 minutes when this file was written: "
             "seconds are noisy, ratios are of one run). SmolLM2-135M-Instruct, LoRA r=8 on the "
             "attention projections, 8 steps on DialogSum dialogues through its chat template (ChatML with a "
             "default system prompt), merged and exported with `export.formats: [gguf]`."), "",
             "## What export's check recorded (export/manifest.json)", "",
             (f"Logits: the first 32 positions of {8} verify examples, against the trained fp32 model, in transformers "
             f"(`gguf_file=`). Greedy: {prompts} test prompts, 16 tokens each, against the trained fp32 model."), "",
             ("| file | size | vs safetensors fp32 | max logit difference | tolerance | transformers greedy | "
             "llama.cpp tokenization | llama.cpp greedy | llama.cpp token agreement | near ties |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for entry in files.values():
        llama = entry["llama_cpp"]
        ties = entry["transformers"]["near_ties"] + (llama.get("near_ties") or [])
        lines.append(f"| {entry['file']} | {entry['bytes'] / 1e6:.1f} MB | {entry['bytes'] / safetensors:.2f}x | "
                     f"{entry['max_logit_difference']:.3g} | {entry['tolerance']:g} x max(1, abs logit) | "
                     f"{entry['transformers']['greedy_identical']} | {llama.get('prompts_tokenized_identically', 'n/a')} | "
                     f"{llama.get('greedy_identical', 'not checked')} | {llama.get('token_agreement', 'n/a')} | "
                     f"{len(ties)} |")
    lines += ["", (f"Safetensors folder (fp32): {safetensors / 1e6:.1f} MB. Pre-tokenizer: "
                  f"`{manifest['gguf']['pre_tokenizer']}`. Chat template: {manifest['chat_template']}."), "",
              "## Generation speed on this CPU", "",
              (f"{prompts} prompts, {NEW_TOKENS} greedy tokens each, one prompt at a time (prompt processing included), "
              "in one process, runtimes one after the other:"), "",
              "| runtime | tokens/s | vs transformers fp32 |", "|---|---|---|"]
    if not speeds:  # --no-speed: the check's own figures (16 tokens a prompt, each runtime after loading its file)
        return "\n".join(lines[:-4] + [
            "Not timed separately (--no-speed). Export's check, 16 greedy tokens a prompt: "
            + "; ".join(f"{kind}: transformers (dequantized to fp32) {e['transformers']['tokens_per_second']} tokens/s, "
                        f"llama.cpp {e['llama_cpp'].get('tokens_per_second', 'n/a')} tokens/s" for kind, e in files.items())]) + "\n"
    base = speeds["transformers fp32 (safetensors)"]
    base_rate = base["tokens"] / base["seconds"]
    for name, speed in speeds.items():
        rate = speed["tokens"] / speed["seconds"]
        lines.append(f"| {name} | {rate:.1f} | {rate / base_rate:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), speed="--no-speed" not in sys.argv))
