"""The classification loss with class weights and label smoothing: torch's cross-entropy, which
takes both (`weight`, `label_smoothing`).  The train and distill stages build it from the recipe
and the prepared labels; the Trainer (session.GuardedTrainer) and distillation's label term call it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LabelLoss:
    weights: tuple[float, ...] | None = None   # one per label id; None: every class counts the same
    smoothing: float = 0.0

    def _weight(self, logits):
        import torch

        return None if self.weights is None else torch.tensor(self.weights, dtype=torch.float32, device=logits.device)

    def __call__(self, logits, labels):
        """The batch mean, as torch weights it: sum of w[y] * loss over sum of w[y].  Labels per token
        ([rows, tokens], logits [rows, tokens, labels]) count each labelled token once (-100: none)."""
        import torch.nn.functional as F

        logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
        return F.cross_entropy(logits.float(), labels, weight=self._weight(logits), label_smoothing=self.smoothing)

    def rows(self, logits, labels):
        """w[y] * loss of each row, [rows] (rows labelled -100 get 0)."""
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), labels, weight=self._weight(logits), label_smoothing=self.smoothing,
                               reduction="none")


def inverse_frequency(label_ids: list, num_labels: int) -> tuple[float, ...]:
    """n / (classes x count of the class), scikit-learn's 'balanced' weights: every class then weighs as
    much in the loss as if the classes were equally frequent.  `label_ids`: one per row, or a list per row
    (labels per token)."""
    counts = [0] * num_labels
    for label in (i for row in label_ids for i in (row if isinstance(row, list) else [row])):
        if label >= 0:  # distillation's augmented copies carry no label (-100)
            counts[label] += 1
    total = sum(counts)
    return tuple(round(total / (num_labels * c), 6) if c else 0.0 for c in counts)
