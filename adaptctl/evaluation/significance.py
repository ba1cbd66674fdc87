"""How sure a figure is: bootstrap 95% intervals of the metrics, and of the adapted model's gain over its
baseline on the same examples (a paired bootstrap, Koehn 2004, as sacrebleu's significance tests resample).

Each evaluation leaves per-example data in EvalResult.extras["per_example"] (plain lists, see below); a
resample draws n example indices with replacement and recomputes every metric from that data, for both
models with the same indices.  1,000 resamples, seeded by the recipe's seed, so a re-run gives the same
interval.  Metrics without per-example data (ece, masked-lm, preference) get no interval.

per_example holds any of:
  "classification": {"gold": [ids], "predicted": [ids], "classes": K, "average": ..., "positive": id}
  "mean": {metric: [one value per example]}        the metric is their mean (ROUGE, exact match, f1)
  "loss": {"losses": [summed loss], "counts": [tokens]}   loss and perplexity = exp(sum / count)
  "sacrebleu": {"bleu": [[sufficient statistics]], "chrf": [[...]]}   corpus BLEU and chrF, by sacrebleu
"""

from __future__ import annotations

import math

import numpy as np

RESAMPLES = 1000
LOWER_IS_BETTER = ("loss", "perplexity", "ece")
CHUNK = 100  # resamples per block: an index matrix of CHUNK x n stays small for large splits


def intervals(per_example: dict, names, seed: int) -> dict[str, list[float]]:
    """Each metric's 95% percentile interval over the resamples: {name: [low, high]}."""
    found = _resampled(per_example, None, names, seed)
    return {name: _percentiles(values) for name, (values, _) in found.items()}


def paired_differences(ours: dict, theirs: dict, names, seed: int) -> dict[str, dict]:
    """The adapted model's metric minus the baseline's on the same resampled examples: the observed
    difference, its 95% interval, and whether the interval excludes 0 on the better side (`beyond_noise`)."""
    found = _resampled(ours, theirs, names, seed)
    out = {}
    for name, (values, base) in found.items():
        observed = _metric(ours, name, None) - _metric(theirs, name, None)
        low, high = _percentiles(values - base)
        better = high < 0 if name in LOWER_IS_BETTER else low > 0
        worse = low > 0 if name in LOWER_IS_BETTER else high < 0
        out[name] = {"difference": round(float(observed), 6), "ci95": [low, high], "beyond_noise": bool(better),
                     "worse_beyond_noise": bool(worse)}
    return out


def _percentiles(values: np.ndarray) -> list[float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return [float("nan"), float("nan")]
    return [round(float(np.percentile(finite, 2.5)), 6), round(float(np.percentile(finite, 97.5)), 6)]


def _resampled(ours: dict, theirs: dict | None, names, seed: int) -> dict[str, tuple]:
    """{metric: (its values over the resamples, the baseline's over the same resamples or None)}."""
    wanted = [name for name in names if _has(ours, name) and (theirs is None or _has(theirs, name))]
    n = _count(ours)
    if not wanted or n == 0 or (theirs is not None and _count(theirs) != n):
        return {}
    rng = np.random.default_rng(seed)
    values: dict[str, tuple[list, list]] = {name: ([], []) for name in wanted}
    for start in range(0, RESAMPLES, CHUNK):
        index = rng.integers(0, n, size=(min(CHUNK, RESAMPLES - start), n))
        for name in wanted:
            values[name][0].append(_metric(ours, name, index))
            if theirs is not None:
                values[name][1].append(_metric(theirs, name, index))
    return {name: (np.concatenate(a), np.concatenate(b) if b else None) for name, (a, b) in values.items()}


def _has(per_example: dict, name: str) -> bool:
    if "classification" in per_example and name in CLASSIFICATION_METRICS:
        return True
    if name in (per_example.get("mean") or {}):
        return True
    if "loss" in per_example and name in ("loss", "perplexity"):
        return True
    return name in (per_example.get("sacrebleu") or {})


def _count(per_example: dict) -> int:
    if "classification" in per_example:
        return len(per_example["classification"]["gold"])
    for values in (per_example.get("mean") or {}).values():
        return len(values)
    if "loss" in per_example:
        return len(per_example["loss"]["losses"])
    for stats in (per_example.get("sacrebleu") or {}).values():
        return len(stats)
    return 0


def _metric(per_example: dict, name: str, index: np.ndarray | None) -> np.ndarray | float:
    """The metric on each resample (rows of `index`), or on the examples as they are (index None)."""
    if name in (per_example.get("mean") or {}):
        values = np.asarray(per_example["mean"][name], dtype=float)
        return values.mean() if index is None else values[index].mean(axis=1)
    if "classification" in per_example and name in CLASSIFICATION_METRICS:
        return classification_resampled(per_example["classification"], index)[name]
    if name in ("loss", "perplexity"):
        losses = np.asarray(per_example["loss"]["losses"], dtype=float)
        counts = np.asarray(per_example["loss"]["counts"], dtype=float)
        total = losses.sum() if index is None else losses[index].sum(axis=1)
        tokens = counts.sum() if index is None else counts[index].sum(axis=1)
        mean = np.divide(total, tokens, out=np.full_like(np.asarray(total, dtype=float), np.nan),
                         where=np.asarray(tokens) > 0)
        return mean if name == "loss" else np.exp(mean)
    return _sacrebleu(name, per_example["sacrebleu"][name], index)


def _sacrebleu(name: str, stats: list[list[float]], index: np.ndarray | None):
    """Corpus BLEU or chrF from summed per-sentence sufficient statistics, by sacrebleu's own scoring
    (what its paired bootstrap does)."""
    from sacrebleu.metrics import BLEU, CHRF

    metric = BLEU() if name == "bleu" else CHRF()
    array = np.asarray(stats, dtype=float)
    if index is None:
        return metric._compute_score_from_stats(list(array.sum(axis=0))).score
    sums = array[index].sum(axis=1)  # (resamples, statistics)
    integral = name == "bleu"  # BLEU's counts are integers, and its brevity penalty compares them
    return np.array([metric._compute_score_from_stats([int(x) if integral else x for x in row]).score for row in sums])


# ------------------------------------------------------------------ classification, vectorised
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "mcc")


def classification_resampled(data: dict, index: np.ndarray | None) -> dict:
    """accuracy, precision, recall, f1 and mcc (as scikit-learn computes them, zero_division=0) from the
    confusion matrix of each resample, all resamples at once."""
    gold, predicted = np.asarray(data["gold"]), np.asarray(data["predicted"])
    k = int(data["classes"])
    if index is None:
        index = np.arange(len(gold))[None, :]
        single = True
    else:
        single = False
    pairs = gold[index] * k + predicted[index] + (np.arange(len(index)) * k * k)[:, None]
    matrix = np.bincount(pairs.ravel(), minlength=len(index) * k * k).reshape(len(index), k, k).astype(float)
    found = _from_confusion(matrix, data["average"], data.get("positive"))
    return {name: float(value[0]) for name, value in found.items()} if single else found


def _from_confusion(matrix: np.ndarray, average: str, positive: int | None) -> dict:
    total = matrix.sum(axis=(1, 2))
    correct = np.trace(matrix, axis1=1, axis2=2)
    true_counts, predicted_counts = matrix.sum(axis=2), matrix.sum(axis=1)
    hits = np.diagonal(matrix, axis1=1, axis2=2)
    precision = _safe(hits, predicted_counts)
    recall = _safe(hits, true_counts)
    f1 = _safe(2 * precision * recall, precision + recall)
    if average == "binary":
        p, r, f = precision[:, positive], recall[:, positive], f1[:, positive]
    elif average == "micro":
        p = r = f = _safe(correct, total)
    elif average == "weighted":
        weights = _safe(true_counts, true_counts.sum(axis=1, keepdims=True))
        p, r, f = ((m * weights).sum(axis=1) for m in (precision, recall, f1))
    else:  # macro
        p, r, f = precision.mean(axis=1), recall.mean(axis=1), f1.mean(axis=1)
    covariance = correct * total - (predicted_counts * true_counts).sum(axis=1)
    spread = np.sqrt((total ** 2 - (predicted_counts ** 2).sum(axis=1)) * (total ** 2 - (true_counts ** 2).sum(axis=1)))
    return {"accuracy": _safe(correct, total), "precision": p, "recall": r, "f1": f, "mcc": _safe(covariance, spread)}


def _safe(numerator, denominator):
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float))
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
