"""Evaluation: metrics from well-kept libraries, batched inference, results."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EvalResult:
    metrics: dict                                   # flat name -> number
    predictions: list[dict] = field(default_factory=list)   # input, reference, prediction, score/probabilities
    examples_per_second: float | None = None
    extras: dict = field(default_factory=dict)      # e.g. confusion matrix, per-class report
