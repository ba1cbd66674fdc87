"""`make bench`: adaptctl against plain Transformers Trainer baselines, in one run.

Every benchmark runs each side on the same model, data, hyperparameters and
number of examples, alternating the order of the sides between repeats, and
reports medians and ratios plus each side's quality metric, so that speed is
never bought with accuracy.  Results go to bench/RESULTS.md (and raw numbers to
bench/out/results.json).

    python bench/run.py [--repeats 3] [--only classification,causal_lm,...]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
DATA = OUT / "data"
SHARED = ROOT.parent / "shared" / "data"
PYTHON = sys.executable
ADAPTCTL = [PYTHON, "-m", "adaptctl"]
CACHE = Path(os.environ.get("ADAPTCTL_CACHE", Path.home() / ".cache" / "adaptctl"))
SMS_TRAIN_ROWS = 1500  # benchmark 7: a small labelled set, where a teacher's soft targets count (issue 6)
HH_TRAIN, HH_DEV, HH_MAX_LENGTH = 64, 16, 192  # benchmark 9: DPO, one epoch of 8 steps, 16 held-out pairs
HH_ACCURACY_TRAIN, HH_ACCURACY_TEST = 640, 200  # bench/recipes/hh-dpo-accuracy.yaml (docs/tasks/preference.md)
DISTILL_SEEDS = (42, 1, 2)  # benchmark 7's training seeds, one per repeat, the same on every side
DEVICE = ["--device", "cpu"]  # the baselines' device: bench/gpu.sh runs them with --device cuda


def tuned_flags() -> list[str]:
    """The tuned baseline on a GPU trains in bf16 mixed precision, as adaptctl's precision: auto does there."""
    return [*DEVICE, "--bf16"] if DEVICE[1] == "cuda" else DEVICE
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "ADAPTCTL_CACHE": str(CACHE)}


# ---------------------------------------------------------------- helpers
def timed(command: list[str]) -> dict:
    """Run `command` under bench/measure.py: its own wall seconds, peak RSS and stdout."""
    done = subprocess.run([PYTHON, str(BENCH / "measure.py"), "--", *command], capture_output=True, text=True,
                          env=ENV, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "n/a"


def model_path(name: str) -> str:
    sys.path.insert(0, str(ROOT))
    from adaptctl.models.resolve import resolve_model

    return str(resolve_model(name).path)


# -------------------------------------------------------------------- data
def write_jsonl(path: Path, rows: list[dict]):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def prepare_data():
    """The exact rows every side reads, fixed by a seeded shuffle."""
    import random

    def sst2(name):
        lines = (SHARED / "sst2" / f"stsa.binary.{name}").read_text(encoding="utf-8").splitlines()
        return [{"label": int(line[0]), "text": line[2:]} for line in lines if line.strip()]

    train = sst2("train")
    random.Random(42).shuffle(train)
    write_jsonl(DATA / "sst2-train.jsonl", train[:1024])
    write_jsonl(DATA / "sst2-dev.jsonl", sst2("dev"))
    dialogues = [json.loads(line) for line in (SHARED / "dialogsum" / "dialogsum.dev.jsonl").read_text().splitlines()]
    random.Random(42).shuffle(dialogues)
    keep = [{"dialogue": d["dialogue"], "summary": d["summary"]} for d in dialogues if _fits_untruncated(d)]
    write_jsonl(DATA / "dialogsum-train.jsonl", keep[:128])
    write_jsonl(DATA / "dialogsum-dev.jsonl", keep[128:160])
    messages = [dict(zip(("label", "text"), line.split("\t", 1)))
                for line in (SHARED / "sms_spam" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines() if line]
    random.Random(42).shuffle(messages)
    write_jsonl(DATA / "sms-test.jsonl", messages[:1115])
    write_jsonl(DATA / "sms-train.jsonl", messages[1115:1115 + SMS_TRAIN_ROWS])
    pairs = hh_pairs(HH_TRAIN + HH_DEV + HH_ACCURACY_TRAIN + HH_ACCURACY_TEST)
    for name, rows in (("hh-train", pairs[:HH_TRAIN]), ("hh-dev", pairs[HH_TRAIN:HH_TRAIN + HH_DEV])):
        write_jsonl(DATA / f"{name}.jsonl", [row["transcripts"] for row in rows])
        write_jsonl(DATA / f"{name}-trl.jsonl", [row["trl"] for row in rows])
    accuracy = pairs[HH_TRAIN + HH_DEV:]
    write_jsonl(DATA / "hh-accuracy-test.jsonl", [row["transcripts"] for row in accuracy[:HH_ACCURACY_TEST]])
    write_jsonl(DATA / "hh-accuracy-train.jsonl", [row["transcripts"] for row in accuracy[HH_ACCURACY_TEST:]])


def hh_pairs(wanted: int) -> list[dict]:
    """The first HH-RLHF harmless pairs that adaptctl accepts and whose conversation with either reply fits in
    HH_MAX_LENGTH tokens under SmolLM2's chat template, so that neither side truncates: each as the raw
    transcripts adaptctl reads and as TRL's conversational format (the messages, then each reply)."""
    from adaptctl.data.columns import RowError
    from adaptctl.tasks.preference import split_pair, transcript_messages

    tokenizer, kept = _smol_tokenizer(), []
    for index, line in enumerate((SHARED / "hh_rlhf_harmless" / "test.jsonl").read_text().splitlines()):
        try:
            prompt, chosen, rejected = split_pair(json.loads(line), index)
        except RowError:
            continue
        messages = transcript_messages(prompt)
        replies = [[{"role": "assistant", "content": reply.strip()}] for reply in (chosen, rejected)]
        if all(_chat_tokens(tokenizer, messages + reply) <= HH_MAX_LENGTH for reply in replies):
            kept.append({"transcripts": json.loads(line),
                         "trl": {"prompt": messages, "chosen": replies[0], "rejected": replies[1]}})
        if len(kept) == wanted:
            break
    return kept


def _chat_tokens(tokenizer, messages: list[dict]) -> int:
    return len(tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"])


def _fits_untruncated(dialogue: dict, max_length: int = 384) -> bool:
    """Benchmark 2 keeps dialogues whose prompt + summary fit in max_length: the baseline cuts long rows at
    the end (losing their summary) and adaptctl cuts the prompt, so only whole rows score the same tokens."""
    tokenizer = _smol_tokenizer()
    prompt = tokenizer(f"Summarize the dialogue.\n{dialogue['dialogue']}\nSummary:")["input_ids"]
    return len(prompt) + len(tokenizer(" " + dialogue["summary"])["input_ids"]) + 1 <= max_length


@functools.lru_cache(maxsize=1)
def _smol_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path("HuggingFaceTB/SmolLM2-135M-Instruct"))


# -------------------------------------------------------------- benchmarks
def adaptctl_run(recipe: str, run_dir: Path, stages: str, training_stage: str = "train", settings: tuple = ()) -> dict:
    """A whole `adaptctl run` process, without prepare's cache (the baselines tokenize every time too).
    report["train"] is the manifest of the stage that trains (train, or distill); settings are --set overrides."""
    shutil.rmtree(CACHE / "prepared", ignore_errors=True)
    command = [*ADAPTCTL, "run", str(BENCH / "recipes" / recipe), "--run-dir", str(run_dir), "--stages", stages,
               "--force", "--quiet", "--json", *(arg for setting in settings for arg in ("--set", setting))]
    report = timed(command)
    report["train"] = json.loads((run_dir / training_stage / "manifest.json").read_text())
    report["run_dir"] = str(run_dir)
    metrics = run_dir / "evaluate" / "metrics.json"
    report["evaluate"] = json.loads(metrics.read_text()) if metrics.exists() else {}
    return report


def bench_classification(repeats: int) -> dict:
    minilm = model_path("sentence-transformers/all-MiniLM-L6-v2")
    sides = {
        "plain": lambda r: timed([PYTHON, str(BENCH / "baselines" / "classification.py"), "--model", minilm,
                                  "--train", str(DATA / "sst2-train.jsonl"), "--dev", str(DATA / "sst2-dev.jsonl"),
                                  "--padding", "max_length", *DEVICE]),
        "tuned": lambda r: timed([PYTHON, str(BENCH / "baselines" / "classification.py"), "--model", minilm,
                                  "--train", str(DATA / "sst2-train.jsonl"), "--dev", str(DATA / "sst2-dev.jsonl"),
                                  "--padding", "dynamic", *tuned_flags()]),
        "adaptctl": lambda r: adaptctl_run("bench1-sst2-full.yaml", OUT / "runs" / f"bench1-{r}", "prepare,train,evaluate"),
    }
    runs = alternate(sides, repeats)
    quality = {"plain": [json.loads(x["child_stdout"].splitlines()[-1])["accuracy"] for x in runs["plain"]],
               "tuned": [json.loads(x["child_stdout"].splitlines()[-1])["accuracy"] for x in runs["tuned"]],
               "adaptctl": [x["evaluate"]["metrics"]["accuracy"] for x in runs["adaptctl"]]}
    return summarise(runs, quality, "accuracy")


def bench_causal_lm(repeats: int) -> dict:
    smol = model_path("HuggingFaceTB/SmolLM2-135M-Instruct")

    def baseline(padding):
        return lambda r: timed([PYTHON, str(BENCH / "baselines" / "causal_lm.py"), "--model", smol,
                                "--train", str(DATA / "dialogsum-train.jsonl"), "--dev", str(DATA / "dialogsum-dev.jsonl"),
                                "--padding", padding, *(tuned_flags() if padding == "dynamic" else DEVICE)])

    sides = {"plain": baseline("max_length"), "tuned": baseline("dynamic"),
             "adaptctl": lambda r: adaptctl_run("bench2-dialogsum-lora.yaml", OUT / "runs" / f"bench2-{r}", "prepare,train")}
    runs = alternate(sides, repeats)
    for side in ("plain", "tuned"):
        for x in runs[side]:
            child = json.loads(x["child_stdout"].splitlines()[-1])
            x["tokens_per_second"], x["eval_loss"] = child["tokens"] / child["train_seconds"], child["eval_loss"]
    for x in runs["adaptctl"]:
        x["tokens_per_second"], x["eval_loss"] = x["train"]["tokens_per_second"], x["train"]["metrics"]["eval_loss"]
    quality = {side: [x["eval_loss"] for x in xs] for side, xs in runs.items()}
    result = summarise(runs, quality, "validation loss")
    result["tokens_per_second"] = {side: median([x["tokens_per_second"] for x in xs]) for side, xs in runs.items()}
    return result


def bench_qlora(repeats: int) -> dict:
    """Benchmark 2's LoRA over a 4-bit base (CUDA with bitsandbytes): adaptctl's qlora against the tuned
    baseline script loading the same base the same way (--qlora)."""
    smol = model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    sides = {"tuned": lambda r: timed([PYTHON, str(BENCH / "baselines" / "causal_lm.py"), "--model", smol,
                                       "--train", str(DATA / "dialogsum-train.jsonl"), "--dev",
                                       str(DATA / "dialogsum-dev.jsonl"), "--padding", "dynamic", "--qlora", *tuned_flags()]),
             "adaptctl": lambda r: adaptctl_run("bench2-dialogsum-lora.yaml", OUT / "runs" / f"qlora-{r}", "prepare,train",
                                                settings=("method.name=qlora",))}
    runs = alternate(sides, repeats)
    for x in runs["tuned"]:
        child = json.loads(x["child_stdout"].splitlines()[-1])
        x["tokens_per_second"], x["eval_loss"] = child["tokens"] / child["train_seconds"], child["eval_loss"]
    for x in runs["adaptctl"]:
        x["tokens_per_second"], x["eval_loss"] = x["train"]["tokens_per_second"], x["train"]["metrics"]["eval_loss"]
    result = summarise(runs, {side: [x["eval_loss"] for x in xs] for side, xs in runs.items()}, "validation loss")
    result["tokens_per_second"] = {side: median([x["tokens_per_second"] for x in xs]) for side, xs in runs.items()}
    result["peak_gpu_mb"] = median([x["train"].get("peak_memory_mb") for x in runs["adaptctl"]])
    return result


def bench_dpo(repeats: int) -> dict:
    """DPO with LoRA on the same 64 HH-RLHF pairs: adaptctl's preference task against TRL's DPOTrainer used
    directly (bench/baselines/dpo.py), both in the precision adaptctl's `precision: auto` picks here."""
    from adaptctl.training.hardware import resolve_precision

    smol = model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    precision = ["--bf16"] if resolve_precision("auto") == "bf16" else []
    sides = {"trl": lambda r: timed([PYTHON, str(BENCH / "baselines" / "dpo.py"), "--model", smol,
                                     "--train", str(DATA / "hh-train-trl.jsonl"), "--dev", str(DATA / "hh-dev-trl.jsonl"),
                                     *DEVICE, *precision]),
             "adaptctl": lambda r: adaptctl_run("bench9-hh-dpo.yaml", OUT / "runs" / f"bench9-{r}", "prepare,train")}
    runs = alternate(sides, repeats)
    for x in runs["trl"]:
        child = json.loads(x["child_stdout"].splitlines()[-1])
        x.update(train_seconds=child["train_seconds"], tokens=child["tokens"], eval_loss=child["eval_loss"],
                 reward_accuracy=child["reward_accuracy"])
    for x in runs["adaptctl"]:
        figures = x["train"]
        x.update(train_seconds=figures["train_seconds"], tokens=figures["tokens_seen"],
                 eval_loss=figures["metrics"]["eval_loss"], reward_accuracy=_last_eval_reward_accuracy(x))
    result = summarise(runs, {side: [x["eval_loss"] for x in xs] for side, xs in runs.items()}, "held-out DPO loss")
    for key in ("train_seconds", "tokens", "reward_accuracy"):
        result[key] = {side: median([x[key] for x in xs]) for side, xs in runs.items()}
    result["tokens_per_second"] = {side: median([x["tokens"] / x["train_seconds"] for x in xs]) for side, xs in runs.items()}
    return result


def bench_preference_accuracy(epochs: int = 1) -> dict:
    """Held-out preference figures of DPO and ORPO against the base model (bench/recipes/hh-dpo-accuracy.yaml
    for `epochs` epochs; docs/tasks/preference.md's table is one epoch on a 2-core CPU, 35 minutes for DPO).  Minutes on a GPU."""
    found = {}
    for loss in ("dpo", "orpo"):
        run = adaptctl_run("hh-dpo-accuracy.yaml", OUT / "runs" / f"hh-{loss}", "prepare,train,evaluate",
                           settings=(f"preference.loss={loss}", f"train.epochs={epochs}"))
        found[loss] = run["evaluate"]["metrics"]
        found["base"] = run["evaluate"]["baseline"]["metrics"]
    return {"epochs": epochs, "metrics": found}


def _last_eval_reward_accuracy(run: dict) -> float | None:
    rows = [json.loads(line) for line in (Path(run["run_dir"]) / "train" / "metrics.jsonl").read_text().splitlines()]
    found = [row["eval_rewards/accuracies"] for row in rows if "eval_rewards/accuracies" in row]
    return found[-1] if found else None


def bench_distill(repeats: int) -> dict:
    """2-layer student from a 6-layer SMS spam teacher: adaptctl distill (live teacher, and cached teacher
    logits) against the Trainer KD baseline.  The teacher is trained once, untimed; every side reads it."""
    minilm = model_path("sentence-transformers/all-MiniLM-L6-v2")
    teacher = adaptctl_run("bench7-sms-teacher.yaml", OUT / "runs" / "bench7-teacher", "prepare,train,evaluate")

    def seed(r):  # a 2-layer student's test errors move by 1-3 with the seed: repeat r trains with its own
        return DISTILL_SEEDS[r % len(DISTILL_SEEDS)]

    def baseline(padding):
        return lambda r: timed([PYTHON, str(BENCH / "baselines" / "distillation.py"), "--student", minilm,
                                "--teacher", str(OUT / "runs" / "bench7-teacher" / "train" / "model"),
                                "--train", str(DATA / "sms-train.jsonl"), "--test", str(DATA / "sms-test.jsonl"),
                                "--padding", padding, "--seed", str(seed(r))])

    def adaptctl(recipe, name):
        return lambda r: adaptctl_run(recipe, OUT / "runs" / f"{name}-{r}", "prepare,distill,evaluate", "distill",
                                      settings=(f"seed={seed(r)}",))

    sides = {"plain": baseline("max_length"), "tuned": baseline("dynamic"),
             "adaptctl": adaptctl("bench7-sms-distill.yaml", "bench7"),
             "adaptctl, cached teacher": adaptctl("bench7-sms-distill-cached.yaml", "bench7-cached")}
    runs = alternate(sides, repeats)
    for xs in runs.values():
        for x in xs:
            if "evaluate" in x:
                x["accuracy"], x["train_seconds"] = x["evaluate"]["metrics"]["accuracy"], x["train"]["train_seconds"]
            else:
                child = json.loads(x["child_stdout"].splitlines()[-1])
                x["accuracy"], x["train_seconds"] = child["accuracy"], child["train_seconds"]
    result = summarise(runs, {side: [x["accuracy"] for x in xs] for side, xs in runs.items()}, "test accuracy")
    result["train_seconds"] = {side: median([x["train_seconds"] for x in xs]) for side, xs in runs.items()}
    result["teacher_accuracy"] = teacher["evaluate"]["metrics"]["accuracy"]
    result["test_rows"] = teacher["evaluate"]["num_examples"]
    result["inference_per_second"] = {  # evaluate's batched pass over the test split, one process each
        "teacher": teacher["evaluate"]["examples_per_second"],
        "student": median([x["evaluate"]["examples_per_second"] for x in runs["adaptctl"]])}
    result["train_rows"] = SMS_TRAIN_ROWS
    return result


def alternate(sides: dict, repeats: int) -> dict:
    """Run every side `repeats` times, rotating which side goes first (warm caches, thermal drift)."""
    names, runs = list(sides), {name: [] for name in sides}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            print(f"  repeat {r + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
            runs[name].append(sides[name](r))
    return runs


def summarise(runs: dict, quality: dict, metric: str) -> dict:
    result = {"seconds": {side: median([x["seconds"] for x in xs]) for side, xs in runs.items()},
              "rss_mb": {side: median([x["rss_mb"] for x in xs]) for side, xs in runs.items()},
              "quality": {side: median(values) for side, values in quality.items()}, "metric": metric,
              "repeats": len(next(iter(runs.values())))}
    if DEVICE[1] == "cuda":
        result["gpu_mb"] = {side: median([peak_gpu_mb(x) for x in xs]) for side, xs in runs.items()}
    return result


def peak_gpu_mb(run: dict) -> float | None:
    """A side's peak GPU memory while training: the baseline prints it, adaptctl's train manifest records it."""
    if "train" in run:
        return run["train"].get("peak_memory_mb")
    return json.loads(run["child_stdout"].splitlines()[-1]).get("peak_gpu_mb")


def matmul_peak() -> dict:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        for _ in range(3):
            a @ b
        start, n = time.perf_counter(), 10
        for _ in range(n):
            a @ b
        peaks[name] = 2 * 2048 ** 3 * n / (time.perf_counter() - start) / 1e9
    return peaks


def bench_flops(classification_run: dict, model_dir: Path, peaks: dict) -> dict:
    """Model FLOP/s = (6 x trainable + 4 x frozen matmul parameters) x real tokens / training seconds (an estimate).

    Matmul parameters are the weights of Linear layers: an embedding lookup multiplies nothing, and MiniLM's
    word embeddings are half its parameters.  Attention score FLOPs (short sentences here) are left out."""
    manifest = classification_run["train"]
    matmul = linear_parameters(model_dir)
    trainable = matmul if manifest["trainable_parameters"] == manifest["total_parameters"] else 0
    flops = (6 * trainable + 4 * (matmul - trainable)) * manifest["tokens_seen"] / manifest["train_seconds"] / 1e9
    return {"tokens_per_second": manifest["tokens_per_second"], "gflops": flops, "peaks": peaks,
            "matmul_parameters": matmul, "total_parameters": manifest["total_parameters"],
            "utilisation_bf16": flops / peaks["bf16"], "utilisation_fp32": flops / peaks["fp32"],
            "precision": manifest.get("precision")}


def linear_parameters(model_dir: Path) -> int:
    """Weights of every Linear layer of the model in `model_dir`, counted on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def bench_plan() -> dict:
    """`adaptctl plan`'s estimates against the training they predict: benchmark 1's and 2's recipes, each
    planned, then trained in its own process (peak RSS from os.wait4, train seconds from the manifest)."""
    found = {}
    for name, recipe in (("classification", "bench1-sst2-full.yaml"), ("causal_lm", "bench2-dialogsum-lora.yaml")):
        run_dir = OUT / "runs" / f"plan-{name}"
        shutil.rmtree(run_dir, ignore_errors=True)
        planned = timed([*ADAPTCTL, "plan", str(BENCH / "recipes" / recipe), "--run-dir", str(run_dir), "--json", "--quiet"])
        estimate = json.loads(planned["child_stdout"].splitlines()[-1])
        trained = timed([*ADAPTCTL, "train", str(BENCH / "recipes" / recipe), "--run-dir", str(run_dir), "--quiet"])
        manifest = json.loads((run_dir / "train" / "manifest.json").read_text())
        found[name] = {"estimated_peak_mb": estimate["memory_mb"]["peak"], "measured_peak_mb": trained["rss_mb"],
                       "estimated_seconds": estimate["estimated_train_seconds"], "measured_seconds": manifest["train_seconds"],
                       "plan_seconds": planned["seconds"], "steps": estimate["steps"], "measured_steps": manifest["steps"]}
    return found


def bench_evaluate(mode: str, run_dir: Path) -> dict:
    report = timed([PYTHON, str(BENCH / "evaluate_speed.py"), mode, str(run_dir)])
    return json.loads(report["child_stdout"].splitlines()[-1])


def bench_prepare() -> dict:
    """Prepare the largest shared set (AG News, 7,600 rows), then again from prepare's cache."""
    command = [*ADAPTCTL, "prepare", str(BENCH / "recipes" / "agnews-prepare.yaml"), "--run-dir",
               str(OUT / "runs" / "prepare"), "--quiet"]
    shutil.rmtree(CACHE / "prepared", ignore_errors=True)
    cold, warm = timed(command), timed(command)
    stats = json.loads((OUT / "runs" / "prepare" / "prepare" / "stats.json").read_text())
    rows = sum(split["rows"] for split in stats["splits"].values())
    return {"rows": rows, "cold_seconds": cold["seconds"], "warm_seconds": warm["seconds"],
            "rows_per_second": rows / cold["seconds"]}


def bench_startup(repeats: int = 5) -> dict:
    commands = {"adaptctl --help": [*ADAPTCTL, "--help"],
                "adaptctl validate": [*ADAPTCTL, "validate", str(ROOT / "recipes" / "quickstart.yaml")],
                "import torch, transformers": [PYTHON, "-c", "import torch, transformers"]}
    return {name: median([timed(cmd)["seconds"] for _ in range(repeats)]) for name, cmd in commands.items()}


# ----------------------------------------------------------------- report
def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="classification,causal_lm,flops,evaluate,prepare,startup,distill,dpo,plan")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="the baselines' device (cuda: bench/gpu.sh)")
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    args = parser.parse_args()
    DEVICE[1] = args.device
    if not SHARED.is_dir():
        sys.exit(f"bench needs the real data sets at {SHARED}")
    prepare_data()
    wanted, results = args.only.split(","), {}
    started = time.time()
    for name in wanted:
        print(f"benchmark: {name}", file=sys.stderr, flush=True)
        try:
            results[name] = run_benchmark(name, args.repeats)
        except RuntimeError as error:  # one failing benchmark is reported; the others' figures are kept
            print(error, file=sys.stderr, flush=True)
            results[name] = {"error": str(error)[-3000:]}
        write(results, started, args.results)  # after each benchmark: a run stopped later keeps what it measured
    print(f"wrote {args.results}", file=sys.stderr)


def write(results: dict, started: float, path: Path):
    from report import write_results

    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "minutes": round((time.time() - started) / 60, 1), "device": gpu_name() or "cpu"}
    (OUT / f"{path.stem.lower()}.json").write_text(json.dumps({**results, "machine": machine}, indent=2))
    write_results({**results, "machine": machine}, path)


def run_benchmark(name: str, repeats: int) -> dict:
    if name == "flops":
        run = adaptctl_run("bench1-sst2-full.yaml", OUT / "runs" / "flops", "prepare,train")
        return bench_flops(run, OUT / "runs" / "flops" / "train" / "model", matmul_peak())
    if name == "evaluate":
        return {"classify": bench_evaluate("classify", OUT / "runs" / "bench1-0"),
                "generate": bench_evaluate("generate", OUT / "runs" / "bench2-0")}
    with_repeats = {"classification": bench_classification, "causal_lm": bench_causal_lm, "qlora": bench_qlora,
                    "distill": bench_distill, "dpo": bench_dpo}
    once = {"prepare": bench_prepare, "startup": bench_startup, "plan": bench_plan,
            "preference_accuracy": bench_preference_accuracy}
    if name in with_repeats:
        return with_repeats[name](repeats)
    if name in once:
        return once[name]()
    raise SystemExit(f"unknown benchmark {name!r}")


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


if __name__ == "__main__":
    main()
