"""The training loss plot (train/loss.png), with each reward's mean per step beside it for GRPO."""

from __future__ import annotations

import json
from pathlib import Path

from adaptctl.core.figures import figure


def loss_plot(metrics_jsonl: Path, path: Path):
    if not metrics_jsonl.exists():
        return
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    rewards = reward_curves(rows)
    with figure(path, (11, 3.5) if rewards else (6, 3.5), columns=2 if rewards else 1) as axes:
        ax = axes[0] if rewards else axes
        if train:
            ax.plot(*zip(*train), label="train loss")
        if evals:
            ax.plot(*zip(*evals), marker="o", label="validation loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        if train or evals:  # a run shorter than logging_steps has no loss rows to label
            ax.legend()
        if rewards:
            for name, points in rewards.items():
                axes[1].plot(*zip(*points), marker=".", label=name)
            axes[1].set_xlabel("step")
            axes[1].set_ylabel("mean reward per step")
            axes[1].legend()


def reward_curves(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Each reward's logged mean per training step (TRL's GRPO: rewards/<name>/mean), by reward name."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("rewards/") and key.endswith("/mean") and isinstance(value, (int, float)):
                curves.setdefault(key[len("rewards/"):-len("/mean")], []).append((row["step"], value))
    return curves
