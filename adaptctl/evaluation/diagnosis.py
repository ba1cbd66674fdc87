"""Calling out a model that learnt nothing: predictions collapsed onto one class, or no metric better than the
baseline beyond noise (evaluation/significance.py), each with the likely causes, in words a user can act on.

The stage gathers the facts (training steps, the learning rate, the train split's label shares); this module
only reads them, so the wording is in one place and testable without a model."""

from __future__ import annotations

from dataclasses import dataclass, field

# A train split whose most frequent label has this share or more is called imbalanced.
IMBALANCED_SHARE = 0.6


@dataclass(frozen=True)
class TrainingFacts:
    """What the evaluated model's training was, for the causes a warning names (None: not known, or no training)."""
    steps: int | None = None
    learning_rate: float | None = None
    learning_rate_from: str = ""                      # "train.learning_rate" or "lora's default"
    label_shares: dict = field(default_factory=dict)  # the train split's label -> share (classification)
    class_weights: bool = False                       # train.class_weights is set


def collapsed_class(per_example: dict, labels: list[str]) -> str | None:
    """The one class every example was predicted as, where the references hold several; else None."""
    data = per_example.get("classification")
    if not data or len(set(data["gold"])) < 2 or len(set(data["predicted"])) != 1:
        return None
    return labels[data["predicted"][0]] if labels else str(data["predicted"][0])


def not_better(differences: dict) -> bool:
    """No metric beats the baseline beyond noise (every 95% interval of the gain reaches 0 or below)."""
    return bool(differences) and not any(found["beyond_noise"] for found in differences.values())


def warnings(collapsed: str | None, differences: dict, baseline_kind: str | None, examples: int,
             facts: TrainingFacts | None) -> list[str]:
    """The evaluation's warnings, each one sentence; the first names the likely causes."""
    found = []
    if collapsed is not None:
        found.append(f"the model predicts one class, `{collapsed}`, for every one of the {examples} examples: it has "
                     "learnt nothing that tells the classes apart")
    worse = {name: d for name, d in differences.items() if d.get("worse_beyond_noise")}
    if baseline_kind and not_better(differences):
        found.append(f"the model does not beat its baseline ({baseline_kind}) beyond noise on any metric: "
                     f"{_gains(differences)}")
    elif baseline_kind and worse:  # better on some metrics, and worse beyond noise on others
        found.append(f"the model is worse than its baseline ({baseline_kind}) beyond noise on {_gains(worse)}")
    if found:
        found[0] += likely_causes(facts)
    return found


def _gains(differences: dict, most: int = 4) -> str:
    return ", ".join(f"{name} {d['difference']:+.4f} (95% CI {d['ci95'][0]:+.4f} to {d['ci95'][1]:+.4f})"
                     for name, d in list(differences.items())[:most])


def likely_causes(facts: TrainingFacts | None) -> str:
    if facts is None:
        return ""
    causes = []
    majority = max(facts.label_shares.items(), key=lambda item: item[1]) if facts.label_shares else None
    if majority and majority[1] >= IMBALANCED_SHARE and not facts.class_weights:
        causes.append(f"class imbalance (the train split is {majority[1]:.0%} `{majority[0]}`): set "
                      "train.class_weights: auto")
    if facts.steps is not None:
        causes.append(f"too few steps ({facts.steps} optimizer steps): raise train.epochs or train.max_steps")
    if facts.learning_rate is not None:
        causes.append(f"the learning rate ({facts.learning_rate:g}, {facts.learning_rate_from}): too small to move "
                      "the model in these steps, or so large it diverged; try another (train.learning_rate)")
    return "; likely causes: " + "; ".join(causes) if causes else ""
