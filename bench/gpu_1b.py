"""The GPU sizes users train (issue 38): a ~1.2 B-parameter Llama built from its config with random weights
(throughput does not depend on the weights' values; nothing downloads), continued pretraining on a plain-text
corpus packed into 2,048-token blocks, full fine-tuning and LoRA, with and without Liger and torch.compile,
against the tuned Trainer (bench/baselines/packed_lm.py) on the same blocks.  Per side: real tokens/s, MFU
against the GPU's dense bf16 peak, peak GPU memory.  bench/gpu.sh runs it; results: bench/RESULTS-gpu-1b.md.

    python bench/gpu_1b.py [--steps 30] [--results bench/RESULTS-gpu-1b.md] [--only full,lora]
    python bench/gpu_1b.py --dry-run      a 2-layer model of the same family, 128-token blocks, 3 steps, on
                                          this machine (a CPU too): every side starts and finishes; no file

MFU = (6 x trainable + 4 x frozen matmul parameters + 12 x layers x hidden x seq) x tokens/s / peak, the
PaLM estimate (attention scores counted; an embedding lookup multiplies nothing), with the dense bf16 peak
of the GPU named in PEAK_TFLOPS (else measured with a bf16 matmul, and the file says so).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
OUT = Path(os.environ.get("GPU_1B_DIR", "/tmp/adaptctl-gpu-1b"))
SMOLLM = "HuggingFaceTB/SmolLM2-135M-Instruct"  # its tokenizer (49,152 tokens) serves the random model

# TinyLlama-1.1B's shape with SmolLM2's vocabulary: 1.19 B parameters.
LLAMA_1B = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
            "num_key_value_heads": 4, "max_position_embeddings": 2048, "rope_theta": 10000.0,
            "tie_word_embeddings": False}
LLAMA_DRY = {**LLAMA_1B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, from the vendors' data sheets.
PEAK_TFLOPS = {"H100 80GB HBM3": 989.0, "H100 SXM": 989.0, "H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
               "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def sides(only: list[str], liger_sides: bool) -> dict[str, dict]:
    """name -> (method, liger, compile) for adaptctl, or the baseline; full and LoRA alike."""
    found = {}
    for method in only:  # adaptctl's sides first: the baseline's trainable count (the same adapter) is theirs
        for liger in (False, True) if liger_sides else (False,):
            for compiled in (False, True):
                label = "+".join(["adaptctl", method, *(["liger"] if liger else []), *(["compile"] if compiled else [])])
                found[label] = {"baseline": False, "method": method, "liger": liger, "compile": compiled}
        found[f"trainer-{method}"] = {"baseline": True, "method": method}
    return found


def build_model(folder: Path, shape: dict) -> int:
    """The random-weight Llama (fp32 on disk: the Trainer keeps fp32 master weights under bf16 autocast) and
    SmolLM2's tokenizer; its parameter count."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(ROOT))
    from adaptctl.models.resolve import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(SMOLLM).path))
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shape)
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    with torch.device("meta"):
        meta = LlamaForCausalLM(config)
    return sum(p.numel() for p in meta.parameters())


def matmul_parameters(shape: dict, vocab: int) -> int:
    """Weights that multiply: every Linear of the decoder layers and the LM head (not the embedding)."""
    h, i, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    return layers * (2 * h * h + 2 * h * kv + 3 * h * i) + h * vocab


def recipe(path: Path, side: dict, model: Path, corpus: Path, seq: int, batch: int, steps: int) -> Path:
    method = ("{name: full}" if side["method"] == "full" else
              f"{{name: lora, r: 16, alpha: 32, target_modules: [{', '.join(LORA_TARGETS)}]}}")
    path.write_text(f"""name: gpu-1b
task: causal-lm
model: {{base: {model}}}
data:
  source: {{path: {corpus}, format: text}}
  text: "{{text}}"
  packing: true
  splits: {{validation: 0.0, test: 0.0}}
  max_length: {seq}
method: {method}
train: {{max_steps: {steps}, batch_size: {batch}, learning_rate: {2.0e-4 if side['method'] == 'lora' else 1.0e-5},
        precision: {'bf16' if cuda() else 'fp32'}, validate: false, logging_steps: {max(1, steps // 3)},
        save_every: {steps * 10}, liger: {str(side['liger']).lower()}, compile: {str(side['compile']).lower()}}}
""")
    return path


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def measure(label: str, side: dict, args, model: Path, corpus: Path) -> dict:
    """One side in its own process: tokens, train seconds, peak GPU memory, trainable parameters."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT),
           "ADAPTCTL_CACHE": str(OUT / "cache")}
    if side["baseline"]:
        command = [PYTHON, str(BENCH / "baselines" / "packed_lm.py"), "--model", str(model), "--text", str(corpus),
                   "--seq", str(args.seq), "--batch", str(args.batch), "--steps", str(args.steps),
                   "--device", "cuda" if cuda() else "cpu", *(["--lora"] if side["method"] == "lora" else [])]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        _check(label, done)
        found = json.loads(done.stdout.strip().splitlines()[-1])
        trainable = None  # the same model and adapter as adaptctl's side of that method
        return {"tokens_per_second": found["tokens"] / found["train_seconds"], "peak_gpu_mb": found["peak_gpu_mb"],
                "trainable": trainable}
    run = OUT / "runs" / label
    path = recipe(OUT / f"{label}.yaml", side, model, corpus, args.seq, args.batch, args.steps)
    done = subprocess.run([PYTHON, "-m", "adaptctl", "run", str(path), "--run-dir", str(run), "--stages", "prepare,train",
                           "--force", "--quiet"],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    _check(label, done)
    manifest = json.loads((run / "train" / "manifest.json").read_text())
    return {"tokens_per_second": manifest["tokens_per_second"], "peak_gpu_mb": manifest.get("peak_memory_mb"),
            "trainable": manifest["trainable_parameters"]}


def _check(label: str, done: subprocess.CompletedProcess):
    if done.returncode != 0:
        raise RuntimeError(f"{label} exited {done.returncode}:\n{done.stderr[-4000:]}")


def peak_tflops() -> tuple[float, str]:
    """The GPU's dense bf16 peak and where it comes from (the data sheet, or a measured matmul)."""
    import torch

    if not torch.cuda.is_available():
        return 1.0, "no GPU (dry run): MFU is meaningless here"
    name = torch.cuda.get_device_name()
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value, f"{name}: {value:.0f} TFLOP/s dense bf16 (data sheet)"
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 20
    for _ in range(n):
        a @ a
    torch.cuda.synchronize()
    value = 2 * 8192**3 * n / (time.perf_counter() - start) / 1e12
    return value, f"{name}: {value:.0f} TFLOP/s (measured bf16 matmul; not in PEAK_TFLOPS)"


def flops_per_token(shape: dict, vocab: int, trainable: int | None, total_matmul: int, seq: int) -> float:
    trainable = total_matmul if trainable is None else min(trainable, total_matmul)
    attention = 12 * shape["num_hidden_layers"] * shape["hidden_size"] * seq
    return 6 * trainable + 4 * (total_matmul - trainable) + attention


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--only", default="full,lora")
    parser.add_argument("--results", default=str(BENCH / "RESULTS-gpu-1b.md"))
    args = parser.parse_args()
    shape = LLAMA_DRY if args.dry_run else LLAMA_1B
    args.seq = 128 if args.dry_run else 2048
    if args.dry_run:
        args.steps, args.batch = 3, 2
    elif not cuda():
        sys.exit("bench/gpu_1b.py needs a CUDA GPU (--dry-run checks the sides on this machine)")
    OUT.mkdir(parents=True, exist_ok=True)
    model = OUT / ("llama-dry" if args.dry_run else "llama-1b")
    parameters = build_model(model, shape)
    size = 2 * 4 * args.steps * args.batch * args.seq  # ~4 bytes a token, twice the blocks the steps take
    corpus = OUT / f"corpus-{size}.txt"
    if not corpus.exists():  # real text (AG News, DialogSum, SST-2)
        subprocess.run([PYTHON, str(BENCH / "scale_data.py"), "corpus", str(size), str(corpus)], check=True)
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(model).vocab_size
    total_matmul = matmul_parameters(shape, vocab)
    peak, peak_source = peak_tflops()
    # On a CPU (the dry run) train.liger is a no-op that adaptctl says in its log: the sides still run.
    liger_sides = not cuda() or importlib.util.find_spec("liger_kernel") is not None
    if not liger_sides:
        peak_source += "; liger-kernel is not installed: the Liger sides are left out"
    rows = []
    for label, side in sides(args.only.split(","), liger_sides).items():
        found = measure(label, side, args, model, corpus)
        if side["baseline"]:  # the same adapter as adaptctl's: its trainable count from adaptctl's side
            found["trainable"] = next((r["trainable"] for r in rows if r["method"] == side["method"]), None)
        if found["trainable"] is None and side["method"] == "full":
            found["trainable"] = parameters
        per_token = flops_per_token(shape, vocab, found["trainable"], total_matmul, args.seq)
        row = {"side": label, "method": side["method"], **found,
               "mfu": found["tokens_per_second"] * per_token / (peak * 1e12)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    table = render(rows, parameters, peak_source, args)
    if args.dry_run:
        print(table)
        return
    Path(args.results).write_text(table)
    print(f"wrote {args.results}")


def render(rows: list[dict], parameters: int, peak_source: str, args) -> str:
    lines = ["# ~1 B Llama on one GPU (issue 38)\n",
             (f"`{' '.join(['python', 'bench/gpu_1b.py', *sys.argv[1:]])}` (bench/gpu.sh), {time.strftime('%Y-%m-%d')}. "
             f"A {parameters / 1e9:.2f} B-parameter Llama from its config with random weights; plain text packed into "
             f"{args.seq}-token blocks, batch {args.batch}, {args.steps} steps, one process per side. Peak: {peak_source}.\n"),
             "| side | real tokens/s | vs the tuned Trainer | MFU | peak memory (MB) |", "| --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        base = next(r for r in rows if r["side"] == f"trainer-{row['method']}")
        memory = f"{row['peak_gpu_mb']:.0f}" if row["peak_gpu_mb"] else "n/a"
        lines.append(f"| {row['side']} | {row['tokens_per_second']:,.0f} | {row['tokens_per_second'] / base['tokens_per_second']:.2f}x "
                     f"| {row['mfu']:.1%} | {memory} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
