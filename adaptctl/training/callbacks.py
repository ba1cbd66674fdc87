"""Trainer callbacks: metrics.jsonl, progress display, and graceful stops."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from transformers import TrainerCallback

from adaptctl.core import console, stop_request

LOG_KEYS = ("loss", "learning_rate", "grad_norm", "eval_loss", "epsilon")   # epsilon: DP-SGD's spent budget
# TRL's GRPO logs: the total reward, its spread, the KL to the reference, the policy's entropy
RL_KEYS = ("reward", "reward_std", "kl", "entropy", "frac_reward_zero_std")
# The Trainer's end-of-training log: the run's summary row, the last line of metrics.jsonl.
SUMMARY_KEYS = {"train_loss": "train_loss", "train_runtime": "seconds", "epsilon": "epsilon"}


def state_is_main() -> bool:
    from adaptctl.core.distributed import is_main

    return is_main()


class MetricsLog(TrainerCallback):
    """One JSON object per logged step in metrics.jsonl (train and eval rows)."""

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = Path(path)
        if state_is_main():
            self._keep_until(resume_step)
        self._clock, self._tokens = None, 0

    def _keep_until(self, step: int):
        # A resumed run replays the steps after its checkpoint: drop their old rows, and the summary
        # of the stopped run (the resumed one ends with its own).
        if not self.path.exists():
            return
        from adaptctl.core.rundir import atomic_write_text

        kept = [r for r in self.path.read_text().splitlines()
                if (s := _step(r)) is not None and s <= step and '"summary": true' not in r]
        atomic_write_text(self.path, "".join(r + "\n" for r in kept))

    def on_train_begin(self, args, state, control, **kwargs):
        self._clock, self._tokens = time.monotonic(), state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0, 4)}
        if "train_loss" in logs:  # the end of training: written even when the run is shorter than logging_steps
            self._append(self._summary(row, logs, state))
            return
        # TRL's preference trainers log their implicit rewards (rewards/accuracies, rewards/margins), GRPO each
        # reward's mean (rewards/<name>/mean) and its completions' lengths and sampling speed (completions/...)
        row.update({k: v for k, v in logs.items()
                    if k.startswith(("eval_", "rewards/", "completions/")) or k in LOG_KEYS or k in RL_KEYS})
        if len(row) == 2:
            return
        elapsed = time.monotonic() - self._clock
        if "loss" in logs and elapsed > 0 and state.num_input_tokens_seen:  # ORPO, KTO: no tokens counted
            row["tokens_per_second"] = round((state.num_input_tokens_seen - self._tokens) / elapsed, 1)
            self._clock, self._tokens = time.monotonic(), state.num_input_tokens_seen
        self._append(row)

    @staticmethod
    def _summary(row: dict, logs: dict, state) -> dict:
        row = {**row, "summary": True, "steps": state.global_step, "tokens": int(state.num_input_tokens_seen or 0)}
        row.update({name: logs[key] for key, name in SUMMARY_KEYS.items() if key in logs})
        return row

    def _append(self, row: dict):
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")  # numbers under fixed names: nothing to redact


def _step(line: str) -> int | None:
    """A row's step; None for a line cut short by a killed process (rows are appended live)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row.get("step", 0) if isinstance(row, dict) else None


class ProgressDisplay(TrainerCallback):
    """A rich bar with the latest loss and lr on a terminal; in CI a line when the step count or the
    metrics moved (console.Progress decides when)."""

    def __init__(self, stage: str = "train"):
        self._stage, self._progress, self._last = stage, None, dict[str, float]()

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._progress = console.Progress(self._stage, state.max_steps, every=15).__enter__()
            self._progress.advance(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._last.update({k: v for k, v in (logs or {}).items() if k in LOG_KEYS})
        if self._progress:  # the Trainer logs after on_step_end: show the step's metrics with its count
            self._progress.advance(0, status_text(self._last))

    def on_step_end(self, args, state, control, **kwargs):
        if self._progress:
            self._progress.advance(1, status_text(self._last))

    def on_train_end(self, args, state, control, **kwargs):
        if self._progress:
            self._progress.__exit__(None, None, None)
            self._progress = None


# Short names, most telling first: the status shares an 80-column line with the bar and is cut at its end.
SHORT_NAMES = {"loss": "loss", "eval_loss": "eval_loss", "learning_rate": "lr", "grad_norm": "grad", "epsilon": "eps"}


def status_text(metrics: dict) -> str:
    return " ".join(f"{short}={metrics[key]:.4g}" for key, short in SHORT_NAMES.items()
                    if isinstance(metrics.get(key), float))


class GracefulStop(TrainerCallback):
    """Ctrl-C / SIGTERM: save a checkpoint at the end of the current step, then stop."""

    def __init__(self):
        self.requested = None
        self._previous = {}

    def install(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.requested is not None:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        stop_request.request(self.requested)
        console.warn(f"{self.requested} received: saving a checkpoint after this step (again to stop at once)")

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True

    def on_epoch_end(self, args, state, control, **kwargs):
        # The Trainer calls on_epoch_end after a stop too, and then evaluates (eval each epoch) and saves
        # again (save each epoch). Mid-epoch that is no epoch end: the evaluation would add a row the
        # undisturbed run lacks, and the second save would overwrite the checkpoint's RNG state with the
        # state after evaluating (whose DataLoader draws a seed), so the resumed run's dropout would differ.
        if self.requested and not epoch_complete(state):
            control.should_evaluate = False
            control.should_save = False


def epoch_complete(state) -> bool:
    """Whether the last step ended an epoch (the Trainer sets epoch = e + (batch + 1) / batches)."""
    return state.epoch is not None and float(state.epoch).is_integer()


class CheckpointAfterEpochEnd(TrainerCallback):
    """A checkpoint asked for on an epoch's last step (save_every dividing the epoch, or a stop) is
    written at the epoch's end instead, after that epoch's evaluation.

    A run resumed from an epoch's last step starts at the next epoch and never runs the evaluation that
    followed the save; that evaluation draws from the global RNG (its DataLoader's seed), so saving before
    it would give the resumed run other dropout masks and lose the epoch's eval_loss row."""

    def __init__(self):
        self._deferred = False

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save and epoch_complete(state):
            control.should_save, self._deferred = False, True

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._deferred:
            control.should_save, self._deferred = True, False


class NoFinalCheckpoint(TrainerCallback):
    """The Trainer checkpoints the last step too, and the final model is saved to model/ right after:
    that checkpoint (weights and optimizer state) is never resumed from, so it is not written
    (0.5 s of benchmark 1's 15 s).  Kept when the best checkpoint is reloaded at the end."""

    def on_step_end(self, args, state, control, **kwargs):
        return self._skip_last(args, state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        return self._skip_last(args, state, control)

    @staticmethod
    def _skip_last(args, state, control):
        if state.global_step >= state.max_steps and not args.load_best_model_at_end:
            control.should_save = False
        return control


class EvalLossHook(TrainerCallback):
    """Calls `hook(step, eval_loss, last)` after each validation (`last`: training has no step left): the
    caller's way into the training loop without this layer knowing it (a sweep reports to its study, and
    may raise to stop the trial)."""

    def __init__(self, hook):
        self.hook = hook

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and metrics and "eval_loss" in metrics:
            self.hook(state.global_step, metrics["eval_loss"], state.global_step >= state.max_steps)
