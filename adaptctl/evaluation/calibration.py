"""Calibration of a classifier's probabilities: expected calibration error over confidence bins, and
temperature scaling (Guo et al. 2017), one scalar T fitted on held-out logits by minimising the
negative log-likelihood, so that softmax(logits / T) says how often the model is right."""

from __future__ import annotations

BINS = 15


def softmax(logits: list[list[float]], temperature: float = 1.0) -> list[list[float]]:
    import torch

    return torch.tensor(logits, dtype=torch.float64).div(temperature).softmax(-1).tolist()


def reliability(probabilities: list[list[float]], labels: list[int], bins: int = BINS) -> list[dict]:
    """Per equal-width confidence bin (of the top class's probability): its range, examples, mean
    confidence and accuracy; empty bins included, so that a plot shows where the model never is."""
    table = [{"low": i / bins, "high": (i + 1) / bins, "count": 0, "confidence": 0.0, "accuracy": 0.0}
             for i in range(bins)]
    for probs, gold in zip(probabilities, labels):
        confidence = max(probs)
        row = table[min(int(confidence * bins), bins - 1)]  # a confidence of exactly 1 goes in the last bin
        row["count"] += 1
        row["confidence"] += confidence
        row["accuracy"] += float(probs.index(confidence) == gold)
    for row in table:
        if row["count"]:
            row["confidence"] /= row["count"]
            row["accuracy"] /= row["count"]
    return table


def expected_calibration_error(probabilities: list[list[float]], labels: list[int], bins: int = BINS) -> float:
    """Sum over bins of (share of examples) x |accuracy - mean confidence|: 0 for a calibrated model."""
    total = max(len(labels), 1)
    return sum(row["count"] / total * abs(row["accuracy"] - row["confidence"])
               for row in reliability(probabilities, labels, bins))


def fit_temperature(logits: list[list[float]], labels: list[int]) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) on these rows (LBFGS over log T, which
    keeps T positive; argmax, and so accuracy, does not change with T)."""
    import torch

    z = torch.tensor(logits, dtype=torch.float64)
    y = torch.tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())
