"""GRPO measured on SVAMP (issue 36): SmolLM2-135M-Instruct zero-shot, LoRA SFT on the equations and their
results, and SFT then GRPO (answer_match + format rewards), each scored by exact match on the same 300
held-out problems (bench/recipes/svamp-*.yaml).  Writes bench/RESULTS-grpo.md (and the GRPO run's loss and
reward plot as bench/RESULTS-grpo.png) from what the runs wrote: nothing is typed in by hand.

    nice -n 10 python bench/grpo_svamp.py [--grpo-steps 40] [--report-only]
    python bench/grpo_svamp.py --runs bench/out/gpu-runs --results bench/RESULTS-gpu-grpo.md   # bench/gpu.sh

A run already complete for the same recipe is not run again (`adaptctl run` skips it), so an interrupted
benchmark continues where it stopped; each stage's wall time is read from its manifest.
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
sys.path.insert(0, str(BENCH.parent))  # the report reads answers with adaptctl's own comparison
RUNS = BENCH / "out" / "runs"  # --runs replaces it
RECIPES = {"zero-shot": "svamp-zero-shot.yaml", "sft": "svamp-sft.yaml", "grpo": "svamp-grpo.yaml"}
COMMAND = "nice -n 10 python bench/grpo_svamp.py"


def adaptctl(name: str, *settings: str):
    if name == "grpo":  # the recipe's model.base names the SFT run in the default folder
        settings = (f"model.base={RUNS / 'svamp-sft'}", *settings)
    command = [sys.executable, "-m", "adaptctl", "run", str(BENCH / "recipes" / RECIPES[name]),
               "--run-dir", str(RUNS / f"svamp-{name}"), *(arg for s in settings for arg in ("--set", s))]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=BENCH.parent)


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_figures(name: str) -> dict:
    run = RUNS / f"svamp-{name}"
    evaluation, train = read(run / "evaluate" / "metrics.json"), read(run / "train" / "manifest.json")
    walls = {stage: read(run / stage / "manifest.json").get("wall_seconds") for stage in ("prepare", "train", "evaluate")}
    return {"metrics": evaluation.get("metrics", {}), "answers": evaluation.get("answers", {}),
            "examples": evaluation.get("num_examples"), "generation_tps": evaluation.get("generation_tokens_per_second"),
            "train": train, "walls": walls, "correct": correct(name)}


def correct(name: str) -> list[float]:
    """1 where the run's answer to a held-out problem is right, by evaluate's own comparison (as numbers)."""
    from adaptctl.evaluation.metrics import same_answer

    rows = [json.loads(line) for line in (RUNS / f"svamp-{name}" / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    return [float(r["predicted_answer"] is not None and same_answer(r["predicted_answer"], r["reference_answer"]))
            for r in rows]


def paired(ours: list[float], theirs: list[float]) -> dict:
    """The exact-match gain of one run over another on the same 300 problems, with its paired bootstrap interval
    (evaluate's own significance code)."""
    from adaptctl.evaluation.significance import paired_differences

    return paired_differences({"mean": {"exact_match": ours}}, {"mean": {"exact_match": theirs}}, ["exact_match"],
                              seed=42)["exact_match"]


def reward_windows(metrics_jsonl: Path, width: int) -> list[dict]:
    """Each reward's mean (and the completions' length and KL) over consecutive windows of `width` steps."""
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "loss" in r]
    keys = ("rewards/answer_match/mean", "rewards/format/mean", "reward", "completions/mean_length",
            "completions/tokens_per_second")
    windows = []
    for start in range(0, len(steps), width):
        part = steps[start:start + width]
        windows.append({"steps": f"{part[0]['step']}-{part[-1]['step']}",
                        **{k: sum(r.get(k) or 0 for r in part) / len(part) for k in keys}})
    return windows


def _f(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def machine(load: dict, wall: float | None, gpu: str | None) -> str:
    took = f", {wall / 60:.0f} minutes this invocation" if wall else ""
    if gpu:
        return f"{gpu}, {os.cpu_count()} CPU cores{took}."
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load "
            f"average {load['start']:.1f} at the start, {load['end']:.1f} at the end{took}). Exact match is unaffected "
            "by the load; every time and speed below is, and would be several times better on the quiet machine: "
            "compare them within this page only.")


def report(figures: dict, load: dict, wall: float | None, command: str, plot: str) -> str:
    zero, sft, grpo = figures["zero-shot"], figures["sft"], figures["grpo"]
    g, gpu = grpo["train"], load.get("gpu")
    optimise = (g["train_seconds"] - g["generation_seconds"]) if g.get("generation_seconds") is not None else None
    lines = [
        "# GRPO on SVAMP (bench/grpo_svamp.py)", "",
        f"`{command}`, {time.strftime('%Y-%m-%d')}: {machine(load, wall, gpu)}", "",
        ("SmolLM2-135M-Instruct on SVAMP (shared/data/svamp, 1,000 problems): 700 to train, the same 300 held out "
        "for every row (split seed 42). Prompt: the problem and \"Write the equation and its result.\" in the chat "
        "template; greedy answers of up to 48 tokens (GRPO samples up to 32 at temperature 1); the answer is the last number written "
        "(`evaluate.answer_pattern`), compared with the reference's as a number."), "",
        "## Exact match on the 300 held-out problems", "",
        "| model | exact match % | answers without a number | training | generation tokens/s (evaluate) |",
        "|---|---|---|---|---|",
    ]
    for label, item, how in (("zero-shot (no training)", zero, "none"),
                             ("LoRA SFT", sft, f"{sft['train'].get('steps')} steps of 8 (1 epoch)"),
                             ("SFT then GRPO", grpo, f"SFT + {g.get('steps')} GRPO steps of 8 completions (2 problems x 4)")):
        lines.append(f"| {label} | {_f(item['metrics'].get('exact_match'))} | {item['answers'].get('unmatched', '-')} "
                     f"of {item['examples']} | {how} | {_f(item['generation_tps'])} |")
    lines += ["", "Paired on the same problems (bootstrap 95% interval, evaluate's significance code), in points of exact match:", "",
              "| comparison | gain | 95% interval | beyond noise |", "|---|---|---|---|"]
    right = {name: item["correct"] for name, item in figures.items()}
    for better, than in (("sft", "zero-shot"), ("grpo", "sft"), ("grpo", "zero-shot")):
        found = paired(right[better], right[than])
        low, high = (100 * bound for bound in found["ci95"])
        lines.append(f"| {better} over {than} | {100 * found['difference']:+.1f} | {low:+.1f} to {high:+.1f} | "
                     f"{'yes' if found['beyond_noise'] else 'no'} |")
    fixed, broke = (sum(a > b for a, b in zip(*pair)) for pair in ((right["grpo"], right["sft"]),
                                                                   (right["sft"], right["grpo"])))
    lines += ["", f"Of the SFT model's answers, GRPO turned {fixed} wrong ones right and {broke} right ones wrong."]
    rewards = grpo["metrics"]
    lines += ["", (f"On the held-out answers the GRPO model's mean rewards are answer_match "
                  f"{_f(rewards.get('reward_answer_match'), 3)} and format {_f(rewards.get('reward_format'), 3)} "
                  f"(mean answer length {_f(rewards.get('completion_tokens'))} tokens)."), "",
              "## Training", "",
              ("| run | steps | train seconds | tokens/s (prompt + completion, whole step) | sampling seconds | "
              "sampled tokens | sampling tokens/s | tokens/s outside sampling | peak RSS MB | stage walls (prepare / train / evaluate) s |"),
              "|---|---|---|---|---|---|---|---|---|---|"]
    s = sft["train"]
    lines.append(f"| LoRA SFT | {s.get('steps')} | {_f(s.get('train_seconds'))} | {_f(s.get('tokens_per_second'))} | - | - | - | - "
                 f"| {_f(s.get('peak_memory_mb'), 0)} | {' / '.join(_f(w) for w in sft['walls'].values())} |")
    outside = g["tokens_seen"] / optimise if optimise else None
    lines.append(f"| GRPO | {g.get('steps')} | {_f(g.get('train_seconds'))} | {_f(g.get('tokens_per_second'))} "
                 f"| {_f(g.get('generation_seconds'))} | {g.get('generated_tokens')} | {_f(g.get('generation_tokens_per_second'))} "
                 f"| {_f(outside)} | {_f(g.get('peak_memory_mb'), 0)} | {' / '.join(_f(w) for w in grpo['walls'].values())} |")
    lines.append(f"| zero-shot | - | - | - | - | - | - | - | - | {' / '.join(_f(w) for w in zero['walls'].values())} |")
    if g.get("generation_seconds") and g.get("train_seconds"):
        lines += ["", (f"Sampling the completions took {100 * g['generation_seconds'] / g['train_seconds']:.0f}% of GRPO's "
                      "training time; the rest is scoring them (the policy's log-probabilities) and the backward pass.")]
    lines += ["", f"## Rewards during GRPO (train/metrics.jsonl; plot: {plot})", "",
              "| steps | answer_match | format | total (weighted) | completion tokens | sampling tokens/s |",
              "|---|---|---|---|---|---|"]
    for w in reward_windows(RUNS / "svamp-grpo" / "train" / "metrics.jsonl", 5):
        lines.append(f"| {w['steps']} | {w['rewards/answer_match/mean']:.3f} | {w['rewards/format/mean']:.3f} | "
                     f"{w['reward']:.3f} | {w['completions/mean_length']:.1f} | {w['completions/tokens_per_second']:.1f} |")
    if gpu:
        return "\n".join(lines) + "\n"
    lines += ["", "## What a GPU run would change (expected, not measured here)", "",
              ("No GPU was lent to this task, so none of this is measured. Sampling is token by token: on this CPU it "
              "is most of a GRPO step (above), on a GPU each token of a 135 M model is a few milliseconds of kernel "
              "launches, so the same 30 steps should take a minute or two and the step's share shifts to the backward "
              "pass, and a run could afford what GRPO recipes on GPUs use: more problems per step, 8 or 16 completions "
              "each, hundreds of steps. TRL's vLLM backend (`use_vllm`) samples faster still and "
              "is not wired into adaptctl yet. bench/gpu.sh runs this benchmark after its others (`GPU_GRPO=0` leaves "
              "it out) into RESULTS-gpu-grpo.md; it has not run on a GPU yet.")]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpo-steps", type=int, default=None, help="override the GRPO recipe's train.max_steps")
    parser.add_argument("--report-only", action="store_true",
                        help="write the results page again from the runs on disk (after a whole invocation)")
    parser.add_argument("--runs", type=Path, default=None, help="the folder of the three run directories "
                        "(default bench/out/runs)")
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS-grpo.md", help="the page written")
    options = parser.parse_args()
    global RUNS
    RUNS = (options.runs or RUNS).resolve()
    RUNS.mkdir(parents=True, exist_ok=True)
    invocation = RUNS / "grpo_svamp.json"  # this invocation's load and wall time, for --report-only
    if options.report_only:
        load, wall = json.loads(invocation.read_text()).values()
    else:
        load, clock = {"start": os.getloadavg()[0], "gpu": gpu_name()}, time.monotonic()
        adaptctl("zero-shot")
        adaptctl("sft")
        adaptctl("grpo", *([f"train.max_steps={options.grpo_steps}"] if options.grpo_steps else []))
        load["end"], wall = os.getloadavg()[0], time.monotonic() - clock
        invocation.write_text(json.dumps({"load": load, "wall": wall}))
    figures = {name: run_figures(name) for name in RECIPES}
    command = COMMAND + "".join(f" --{name} {value}" for name, value in (("runs", options.runs), ("results", options.results))
                                if value not in (None, parser.get_default(name)))
    options.results.write_text(report(figures, load, wall, command, options.results.with_suffix(".png").name))
    plot = RUNS / "svamp-grpo" / "train" / "loss.png"
    if plot.is_file():
        shutil.copyfile(plot, options.results.with_suffix(".png"))
    print(f"wrote {options.results}")


if __name__ == "__main__":
    main()
