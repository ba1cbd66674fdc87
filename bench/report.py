"""bench/RESULTS.md from the raw results of one `make bench` run."""

from __future__ import annotations

import time
from pathlib import Path


def _f(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ratio(numerator, denominator):
    return "n/a" if not numerator or not denominator else f"{numerator / denominator:.2f}x"


def _sides_table(result: dict, speed_key: str = "seconds") -> list[str]:
    seconds, quality, rss = result["seconds"], result["quality"], result["rss_mb"]
    lines = [f"| side | wall seconds (median of {result['repeats']}) | speed-up of adaptctl | {result['metric']} | peak RSS MB |",
             "|---|---|---|---|---|"]
    for side in ("plain", "tuned", "adaptctl"):
        if side in seconds:
            speedup = _ratio(seconds[side], seconds["adaptctl"]) if side != "adaptctl" else "1.00x"
            lines.append(f"| {side} | {_f(seconds[side], 1)} | {speedup} | {_f(quality[side], 4)} | {_f(rss[side], 0)} |")
    return lines


def _distill_section(r: dict) -> list[str]:
    seconds, train, quality, rss = r["seconds"], r["train_seconds"], r["quality"], r["rss_mb"]
    lines = [f"## 7. Distillation (6-layer MiniLM SMS spam teacher into 2 layers; {r['train_rows']:,} labelled messages, "
             f"4 epochs, accuracy on {r['test_rows']:,} test messages)", "",
             "The same alpha 0.5, T 2 KL loss, student layers [0, 5], data and hyperparameters on every side. Baseline: "
             "a Trainer whose compute_loss runs the teacher under no_grad on every batch (the Transformers KD guide). "
             "adaptctl: `run --stages prepare,distill,evaluate`, the teacher under inference_mode in bf16, and with "
             "`distill.cache_teacher` its logits computed once. Whole processes; the teacher was trained once, untimed. "
             "Repeat r trains every side with seed 42, 1 or 2, so accuracy is a median over training seeds.", "",
             f"| side | wall seconds (median of {r['repeats']}) | speed-up over tuned | training seconds | test accuracy | peak RSS MB |",
             "|---|---|---|---|---|---|"]
    for side in seconds:
        lines.append(f"| {side} | {_f(seconds[side], 1)} | {_ratio(seconds['tuned'], seconds[side])} | {_f(train[side], 1)} | "
                     f"{_f(quality[side], 4)} | {_f(rss[side], 0)} |")
    speed = r["inference_per_second"]
    return lines + ["", f"Teacher test accuracy {_f(r['teacher_accuracy'], 4)}. Inference (evaluate's batched pass): "
                        f"teacher {_f(speed['teacher'], 0)} examples/s, student {_f(speed['student'], 0)} "
                        f"({_ratio(speed['student'], speed['teacher'])}). Target: >= 2x tuned ({_ratio(seconds['tuned'], seconds['adaptctl'])}), "
                        f"accuracy within 0.005 of it (adaptctl - tuned = {quality['adaptctl'] - quality['tuned']:+.4f}).", ""]


def _dpo_section(r: dict) -> list[str]:
    tps = r["tokens_per_second"]
    lines = ["## 10. DPO (SmolLM2-135M + LoRA r16, 64 HH-RLHF harmless pairs, 1 epoch of 8 steps, 16 held-out pairs)", "",
             "adaptctl's preference task against TRL's `DPOTrainer` used directly (bench/baselines/dpo.py) with the same "
             "model, pairs, LoRA and DPO settings, both in the precision `precision: auto` picks here. Tokens are what "
             "each Trainer counted (prompt + reply, chosen and rejected, no padding); both losses are TRL's.", "",
             "| side | real tokens/s (training) | speed-up of adaptctl | train seconds | held-out DPO loss | "
             "held-out reward accuracy | peak RSS MB | wall seconds |", "|---|---|---|---|---|---|---|---|"]
    for side in ("trl", "adaptctl"):
        lines.append(f"| {side} | {_f(tps[side], 0)} | {_ratio(tps['adaptctl'], tps[side])} | {_f(r['train_seconds'][side], 1)} | "
                     f"{_f(r['quality'][side], 4)} | {_f(r['reward_accuracy'][side], 3)} | {_f(r['rss_mb'][side], 0)} | "
                     f"{_f(r['seconds'][side], 1)} |")
    return lines + ["", f"Peak RSS: adaptctl / TRL = {r['rss_mb']['adaptctl'] / r['rss_mb']['trl']:.2f}.", ""]


def _preference_accuracy_section(r: dict) -> list[str]:
    m = r["metrics"]
    lines = [f"## 11. Preference accuracy (bench/recipes/hh-dpo-accuracy.yaml, {r['epochs']} epochs, 100 held-out pairs)", "",
             "| figure | base | DPO | ORPO |", "|---|---|---|---|"]
    for key in ("preference_accuracy", "mean_margin", "reward_accuracy", "reply_tokens"):
        lines.append(f"| {key} | " + " | ".join(_f(m[side].get(key), 3) for side in ("base", "dpo", "orpo")) + " |")
    return lines + [""]


def _plan_section(r: dict) -> list[str]:
    lines = ["## 9. `adaptctl plan` against the run it plans", "",
             "Each recipe planned (`adaptctl plan`, 5 measured steps), then trained by `adaptctl train` in its own process. "
             "Peak: the plan's estimated peak per device against the train process's peak RSS (os.wait4). Time: the "
             "estimated training seconds against the train manifest's. Error = estimate / measured - 1; the bar is 25%.", "",
             "| recipe | steps | estimated peak MB | measured peak MB | error | estimated train s | measured train s | error | plan took s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, x in r.items():
        peak_error = x["estimated_peak_mb"] / x["measured_peak_mb"] - 1
        time_error = x["estimated_seconds"] / x["measured_seconds"] - 1
        lines.append(f"| {name} | {x['steps']} | {_f(x['estimated_peak_mb'], 0)} | {_f(x['measured_peak_mb'], 0)} | "
                     f"{peak_error:+.0%} | {_f(x['estimated_seconds'], 1)} | {_f(x['measured_seconds'], 1)} | "
                     f"{time_error:+.0%} | {_f(x['plan_seconds'], 1)} |")
    return lines + [""]


def _gpu_memory_section(results: dict) -> list[str]:
    """Peak GPU memory allocated while training, per side (bench/gpu.sh runs only)."""
    rows = [(name, r["gpu_mb"]) for name, r in results.items() if isinstance(r, dict) and r.get("gpu_mb")]
    if not rows:
        return []
    lines = ["## Peak GPU memory while training (torch.cuda.max_memory_allocated, MB)", "",
             "| benchmark | plain | tuned | adaptctl |", "|---|---|---|---|"]
    for name, sides in rows:
        lines.append(f"| {name} | " + " | ".join(_f(sides.get(side), 0) for side in ("plain", "tuned", "adaptctl")) + " |")
    return lines + [""]


def write_results(results: dict, path: Path):
    failed = {name: r["error"] for name, r in results.items() if isinstance(r, dict) and "error" in r}
    results = {name: r for name, r in results.items() if name not in failed}
    device = results["machine"].get("device", "cpu")
    lines = ["# Benchmarks", "", f"Generated by `make bench` on {time.strftime('%Y-%m-%d')}: "
             f"{device}, {results['machine']['cpus']} CPU cores, Python {results['machine']['python']}, "
             f"{results['machine']['minutes']} minutes in all. Every side ran in the same invocation, alternating order; "
             "figures are medians, speed-ups are baseline time / adaptctl time.", ""]
    if device != "cpu":
        lines += ["On the GPU every side trains on it; the tuned baseline uses bf16 mixed precision (`--bf16`), as "
                  "adaptctl's `precision: auto` does there, and the plain one fp32.", ""]
    if "classification" in results:
        r = results["classification"]
        lines += ["## 1. Classification, full fine-tune (MiniLM, 1,024 SST-2 sentences, 1 epoch, accuracy on SST-2 dev)", "",
                  "Whole processes: adaptctl `run` (prepare + train + evaluate, no prepare cache) against the baseline script.", ""]
        lines += _sides_table(r)
        lines += ["", f"Targets: >= 8x plain ({_ratio(r['seconds']['plain'], r['seconds']['adaptctl'])}), "
                      f">= 2.5x tuned ({_ratio(r['seconds']['tuned'], r['seconds']['adaptctl'])}), accuracy within 0.01 "
                      f"(adaptctl - tuned = {r['quality']['adaptctl'] - r['quality']['tuned']:+.4f}).", ""]
    if "causal_lm" in results:
        r = results["causal_lm"]
        tps = r["tokens_per_second"]
        lines += ["## 2. Causal-LM LoRA (SmolLM2-135M, 128 DialogSum dialogues, response-only loss)", ""]
        lines += ["| side | real tokens/s (training) | speed-up of adaptctl | validation loss | peak RSS MB |", "|---|---|---|---|---|"]
        for side in ("plain", "tuned", "adaptctl"):
            lines.append(f"| {side} | {_f(tps[side], 0)} | {_ratio(tps['adaptctl'], tps[side])} | "
                         f"{_f(r['quality'][side], 4)} | {_f(r['rss_mb'][side], 0)} |")
        loss_gap = (r["quality"]["adaptctl"] - r["quality"]["tuned"]) / r["quality"]["tuned"]
        lines += ["", f"Target: >= 4x tuned in real tokens/s ({_ratio(tps['adaptctl'], tps['tuned'])}), "
                      f"validation loss within 2% ({loss_gap:+.1%}).", ""]
    if "qlora" in results:
        r = results["qlora"]
        tps = r["tokens_per_second"]
        lines += ["## 2b. QLoRA (benchmark 2 over a 4-bit NF4 base, CUDA)", "",
                  "| side | real tokens/s (training) | speed-up of adaptctl | validation loss | peak RSS MB |", "|---|---|---|---|---|"]
        for side in ("tuned", "adaptctl"):
            lines.append(f"| {side} | {_f(tps[side], 0)} | {_ratio(tps['adaptctl'], tps[side])} | "
                         f"{_f(r['quality'][side], 4)} | {_f(r['rss_mb'][side], 0)} |")
        lines += ["", f"adaptctl's peak GPU memory while training: {_f(r['peak_gpu_mb'], 0)} MB.", ""]
    lines += _gpu_memory_section(results)
    if "flops" in results:
        r = results["flops"]
        lines += ["## 3. Training throughput and FLOPs utilisation (benchmark 1's training, adaptctl)", "",
                  f"Model FLOP/s is an estimate: (6 x trainable + 4 x frozen matmul parameters) x real tokens / training "
                  f"seconds, where matmul parameters are the weights of Linear layers ({r['matmul_parameters'] / 1e6:.1f} M of "
                  f"MiniLM's {r['total_parameters'] / 1e6:.1f} M; an embedding lookup multiplies nothing). Attention-score FLOPs "
                  "are left out, so this is a lower bound. The peaks are 2048x2048 matmuls measured in the same run.", "",
                  "| real tokens/s | model GFLOP/s | precision | fp32 peak GFLOP/s | bf16 peak GFLOP/s | of bf16 peak | of fp32 peak |",
                  "|---|---|---|---|---|---|---|",
                  f"| {_f(r['tokens_per_second'], 0)} | {_f(r['gflops'], 1)} | {r['precision']} | {_f(r['peaks']['fp32'], 1)} | "
                  f"{_f(r['peaks']['bf16'], 1)} | {r['utilisation_bf16']:.0%} | {r['utilisation_fp32']:.0%} |", "",
                  "Target: >= 50% of the bf16 peak. What bounds it on this CPU: docs/benchmarks.md.", ""]
    if "evaluate" in results:
        c, g = results["evaluate"]["classify"], results["evaluate"]["generate"]
        lines += ["## 4. Evaluate: batched, length-sorted inference vs a per-example loop", "",
                  "| workload | examples | batched | per-example loop | speed-up | outputs agreeing |", "|---|---|---|---|---|---|",
                  f"| SST-2 dev classification (benchmark 1's model), examples/s | {c['examples']} | "
                  f"{_f(c['batched_per_second'], 1)} | {_f(c['loop_per_second'], 1)} | "
                  f"{_ratio(c['batched_per_second'], c['loop_per_second'])} | {c['agreement']:.1%} |", "",
                  "Batched: adaptctl's evaluate path (length-sorted batches, bf16 autocast). Loop: one example at a "
                  "time in fp32, as a hand-written script does. Agreement: identical label.", ""]
        lines += _generation_section(g)
    if "prepare" in results:
        r = results["prepare"]
        lines += ["## 5. Prepare (AG News, the largest shared set)", "",
                  "| rows | cold seconds (process) | rows/s | cached re-run seconds |", "|---|---|---|---|",
                  f"| {r['rows']} | {_f(r['cold_seconds'], 1)} | {_f(r['rows_per_second'], 0)} | {_f(r['warm_seconds'], 1)} |", ""]
    if "startup" in results:
        r = results["startup"]
        base = r["import torch, transformers"]
        lines += ["## 6. CLI start-up (median of 5 processes)", "", "| command | seconds | of the torch+transformers import |",
                  "|---|---|---|"]
        lines += [f"| `{name}` | {_f(value, 2)} | {value / base:.0%} |" for name, value in r.items()]
        lines += ["", "Target: under a third of the torch + transformers import.", ""]
    if "distill" in results:
        lines += _distill_section(results["distill"])
    if "dpo" in results:
        lines += _dpo_section(results["dpo"])
    if "preference_accuracy" in results:
        lines += _preference_accuracy_section(results["preference_accuracy"])
    if "plan" in results:
        lines += _plan_section(results["plan"])
    lines += ["## 8. Peak memory", "", "Peak RSS of each training benchmark's processes is in the tables above (from os.wait4).", ""]
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in results["notes"]]
    for name, error in failed.items():
        lines += [f"## {name}: failed", "", "```", error.strip(), "```", ""]
    path.write_text("\n".join(lines) + "\n")


def _generation_section(g: dict) -> list[str]:
    """Benchmark 4's generation half: adaptctl against Transformers' generate in a plain script."""
    if "sides" not in g:  # results from before the plain-generate baseline
        return []
    plain = g["sides"]["plain generate, fp32"]["tokens_per_second"]
    lines = [f"### Generation: DialogSum greedy summaries from benchmark 2's LoRA model ({g['examples']} prompts, "
             f"batches of {g['batch_size']}, up to {g['max_new_tokens']} new tokens, best of {g['repeats']})", "",
             "| side | generated tokens/s | vs plain generate fp32 | tokens identical to plain fp32 |", "|---|---|---|---|"]
    lines += [f"| {name} | {_f(side['tokens_per_second'], 1)} | {_ratio(side['tokens_per_second'], plain)} | "
              f"{side['agreement_with_plain_fp32']:.0%} |" for name, side in g["sides"].items()]
    return lines + ["", "Plain generate: a hand-written script's `model.generate` on the same 8-prompt batches in "
                        "file order (tokenizer.pad on the left), no length sorting. adaptctl: length-sorted batches, "
                        "bf16 autocast with the frozen weights cast once per evaluation (inference.weights_cast_once); "
                        "the row with per-use casts is the same path without that lever.", ""]
