"""`adaptctl plan RECIPE`: what a run will cost on this machine, before it runs.

It prepares the data (the prepare stage, reused when already done, as `adaptctl train` would), loads the
base model with the recipe's method applied, and runs a few real training steps of the recipe's
Trainer on its data (no checkpoint, no save), then reports:

- trainable and total parameters;
- the peak memory per device: weights, gradients and AdamW's two moments counted from the parameters,
  and activations measured in those steps, scaled to the largest batch the data can make (batch_size
  rows of its longest prepared row), so a later long batch does not surprise;
- the optimizer steps and tokens of the whole run, and its training time from the measured seconds per
  step (the first step, which warms up kernels and allocators, is left out); evaluation is not counted.

A warning says when the estimate exceeds the device's memory (CUDA: the device's; CPU: the machine's).
One process, one device: under FSDP weights, gradients and optimizer state are sharded across the
devices, which this estimate does not divide.
"""

from __future__ import annotations

import math
import re
import statistics
import tempfile
import time
from pathlib import Path

from adaptctl.core import console

MB = 2**20
ADAM_STATES = 2          # AdamW keeps two fp32 moments per trainable parameter
FP32_BYTES = 4
DEFAULT_STEPS = 5        # measured steps, the first of them untimed


def make_plan(ctx, steps: int = DEFAULT_STEPS, say: bool = True) -> dict:
    """say: the summary in the log too (with --json; otherwise the command prints it on stdout)."""
    from adaptctl import pipeline

    with ctx.run.lock():
        pipeline.execute("prepare", ctx, skip_done=True)
    model, tokenizer, data, label2id, model_path = _load(ctx)
    from adaptctl.training.session import count_parameters

    trainable, total = count_parameters(model)
    schedule = _schedule(ctx.recipe, data)
    measured = _measure(ctx, model, tokenizer, data, label2id, model_path, steps)
    memory = _memory(model, trainable, measured, schedule["worst_batch_tokens"])
    seconds = measured["seconds_per_step"] * schedule["steps"]
    plan = {"stage": "plan", "status": "complete", "run_dir": str(ctx.run.root),
            "parameters": {"trainable": trainable, "total": total},
            "memory_mb": memory, "device": measured["device"], **schedule,
            "seconds_per_step": round(measured["seconds_per_step"], 3), "measured_steps": measured["steps"],
            "estimated_train_seconds": round(seconds, 1)}
    if measured["generation_share"] is not None:
        plan.setdefault("generation", {})["share_of_step_time"] = round(measured["generation_share"], 3)
    plan["fits"] = memory["peak"] <= measured["device_memory_mb"]
    _say(plan, measured["device_memory_mb"], say)
    return plan


def _load(ctx):
    from transformers import AutoTokenizer, set_seed

    from adaptctl.data.prepared import load_prepared
    from adaptctl.models.loading import load_base_model, tokenizer_options
    from adaptctl.methods import get_method
    from adaptctl.tasks import get_task
    from adaptctl.training import gpu_levers

    recipe = ctx.recipe
    data, label2id, model_path = load_prepared(ctx.run, "plan")
    set_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_path), **tokenizer_options(recipe))
    method = get_method(recipe.method.name)
    options = {**method.load_options(recipe), **gpu_levers.load_options(recipe.train)}
    base = load_base_model(get_task(recipe.task), model_path, recipe, label2id, options)
    model = method.apply(base, recipe)
    return model, tokenizer, data, label2id, model_path


# ------------------------------------------------------------------ the run's size
def _schedule(recipe, data) -> dict:
    """Optimizer steps and tokens of the whole run, and the largest batch (in tokens) the data can make.

    A task that samples what it trains on (reinforcement) trains on `group` completions of each prompt, each
    up to `completion` tokens long: they count as rows and tokens (at most: a completion may stop early), and
    the plan says how many completions the run samples."""
    from adaptctl.tasks import get_task

    train, settings = data["train"], recipe.train
    rollouts = get_task(recipe.task).rollouts
    group, completion = rollouts(recipe) if rollouts else (1, 0)
    rows = len(train)
    per_step = settings.batch_size * settings.gradient_accumulation
    # TRL's GRPO sampler drops an epoch's last prompts that do not fill a step (RepeatSampler)
    steps_per_epoch = max(rows * group // per_step, 1) if rollouts else math.ceil(rows / per_step)
    steps = settings.max_steps or math.ceil(settings.epochs * steps_per_epoch)
    lengths = train["num_tokens"] if "num_tokens" in train.column_names else [recipe.data.max_length] * rows
    epoch_tokens = (sum(lengths) + rows * completion) * group
    tokens = round(epoch_tokens * steps / steps_per_epoch) if steps_per_epoch else 0
    longest = min(max(lengths, default=0), recipe.data.max_length) + completion
    schedule = {"train_rows": rows, "steps": steps, "tokens": tokens,
                "worst_batch_tokens": settings.batch_size * _padded(longest)}
    if rollouts:
        schedule["generation"] = {"completions_per_prompt": group, "max_completion_tokens": completion,
                                  "completions": steps * per_step, "generated_tokens_at_most": steps * per_step * completion}
    return schedule


def _padded(length: int) -> int:
    return 8 * math.ceil(length / 8)  # the collators pad to a multiple of 8


# ------------------------------------------------------------------ measured steps
def _measure(ctx, model, tokenizer, data, label2id: dict, model_path: Path, steps: int) -> dict:
    """A few real Trainer steps: seconds per step, and the memory they added over the loaded model."""
    import torch

    from adaptctl.stages.training_stage import training_session
    from adaptctl.training.session import peak_memory_mb, reset_peak_memory

    with tempfile.TemporaryDirectory(prefix="adaptctl-plan-") as scratch:
        session = training_session(ctx, Path(scratch) / "plan", model, tokenizer, data, label2id, model_path)
        shapes, clock = list[tuple](), step_clock()
        session.collator = _recording(session.collator, shapes)
        session.callbacks = (clock,)  # not the run's own (a sweep's pruner): this is no run
        # built anew, not dataclasses.replace'd: a TRL config derives fields that it then refuses to be given
        args = session.arguments(max_steps=steps + 1, save_strategy="no", eval_strategy="no",
                                 logging_strategy="no", load_best_model_at_end=False)
        trainer, _ = session.build_trainer(args, 0)
        reset_peak_memory()
        before = _current_mb()
        trainer.train()
    cuda = torch.cuda.is_available()
    # a trainer that samples its batches (GRPO) collates nothing: it notes its batches' sizes and sampling time
    batch_tokens = max(shapes, default=0) or max(getattr(trainer, "batch_tokens", []), default=1)
    sampling = getattr(trainer, "generation_seconds", None)
    return {"seconds_per_step": statistics.median(clock.seconds[1:] or clock.seconds), "steps": len(clock.seconds) - 1,
            "before_mb": before, "peak_mb": peak_memory_mb(), "batch_tokens": batch_tokens,
            "generation_share": sampling / sum(clock.seconds) if sampling is not None and sum(clock.seconds) else None,
            "device": torch.cuda.get_device_name() if cuda else "cpu", "device_memory_mb": _device_memory_mb()}


def _recording(collator, shapes: list):
    """The collator, noting each batch's padded size in tokens (rows x length)."""
    def collate(features):
        batch = collator(features)
        shapes.append(batch["input_ids"].numel())
        return batch
    return collate


def step_clock():
    """A Trainer callback whose `seconds` holds each optimizer step's wall time."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.seconds, self._start = [], 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._start)

    return StepClock()


# ------------------------------------------------------------------ memory
def _memory(model, trainable: int, measured: dict, worst_batch_tokens: int) -> dict:
    """MB per device: the parts counted from the parameters, activations measured and scaled to the worst batch."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / MB
    gradients = trainable * FP32_BYTES / MB
    optimizer = trainable * FP32_BYTES * ADAM_STATES / MB
    grown = max(measured["peak_mb"] - measured["before_mb"], 0.0)
    activations = max(grown - gradients - optimizer, 0.0) * worst_batch_tokens / measured["batch_tokens"]
    baseline = measured["before_mb"] if measured["device"] == "cpu" else weights  # CPU: the process, libraries too
    peak = baseline + gradients + optimizer + activations
    return {name: round(value, 1) for name, value in
            {"weights": weights, "gradients": gradients, "optimizer": optimizer, "activations": activations,
             "process_before_training": measured["before_mb"], "peak": peak}.items()}


def _current_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.memory_allocated() / MB
    return _proc_status_mb("VmRSS")


def _proc_status_mb(field: str) -> float:
    """A size from /proc/self/status (Linux); elsewhere getrusage's peak."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) / 1024  # type: ignore[union-attr]  # Linux writes it


def _device_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / MB
    try:
        return int(re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M).group(1)) / 1024  # type: ignore[union-attr]  # None: AttributeError, caught
    except (OSError, AttributeError):
        return math.inf


# ------------------------------------------------------------------ saying it
def summary_lines(plan: dict) -> list[str]:
    """The plan in words: what `adaptctl plan` prints on stdout (with --json, in the log on stderr)."""
    memory, params = plan["memory_mb"], plan["parameters"]
    lines = [f"plan: {params['trainable']:,} of {params['total']:,} parameters trainable",
             f"plan: peak memory about {_gb(memory['peak'])} on {plan['device']} (weights {_gb(memory['weights'])}, "
             f"gradients {_gb(memory['gradients'])}, optimizer {_gb(memory['optimizer'])}, activations "
             f"{_gb(memory['activations'])} at the largest batch of {plan['worst_batch_tokens']:,} tokens)",
             f"plan: {plan['steps']:,} optimizer steps over {plan['train_rows']:,} rows, about "
             f"{plan['tokens']:,} tokens; {plan['seconds_per_step']:.2f} s per step measured over "
             f"{plan['measured_steps']} steps: training about {_duration(plan['estimated_train_seconds'])} "
             "(evaluation not included)"]
    if generation := plan.get("generation"):
        lines.append(f"plan: {generation['completions']:,} completions sampled ({generation['completions_per_prompt']} "
                     f"per prompt), at most {generation['generated_tokens_at_most']:,} generated tokens; sampling "
                     f"took {generation.get('share_of_step_time', 0):.0%} of the measured step time")
    return lines


def _say(plan: dict, device_mb: float, summary: bool = True):
    for line in summary_lines(plan) if summary else []:
        console.info(line)
    if not plan["fits"]:
        console.warn(f"plan: the estimated peak ({_gb(plan['memory_mb']['peak'])}) exceeds the {plan['device']}'s memory "
                     f"({_gb(device_mb)}): lower train.batch_size or data.max_length, or use gradient_checkpointing or lora")


def _gb(mb: float) -> str:
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
