"""Task metrics, computed by scikit-learn, rouge-score and sacrebleu.

Never `evaluate.load`: it fetches metric code from the network.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any
from collections import Counter


def selected(metrics: dict, wanted) -> dict:
    """The numbers of a metrics map as metrics.json keeps them (rounded), only those in `wanted` when set."""
    keep = {k: round(v, 6) for k, v in metrics.items() if isinstance(v, (int, float))}
    return {k: v for k, v in keep.items() if not wanted or k in wanted}


# ---------------------------------------------------------- classification
def classification_metrics(y_true: list[int], y_pred: list[int], labels: list[str],
                           average: str | None = None, positive_label: str | None = None,
                           probabilities: list[list[float]] | None = None) -> tuple[dict, dict]:
    """accuracy, precision, recall, f1, mcc, and with the class probabilities the expected calibration
    error (ece) and its reliability table; plus a per-class report and the confusion matrix."""
    from sklearn.metrics import (accuracy_score, classification_report, confusion_matrix, matthews_corrcoef,
                                 precision_recall_fscore_support)

    ids = list(range(len(labels)))
    average = average or ("binary" if len(labels) == 2 else "macro")
    check_positive_label(positive_label, labels)
    pos = labels.index(positive_label) if positive_label is not None else _default_positive(labels)
    binary = average == "binary"
    kwargs = {"pos_label": pos} if average == "binary" else {"labels": ids}
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0, **kwargs)
    metrics = {"accuracy": accuracy_score(y_true, y_pred), "precision": precision, "recall": recall, "f1": f1,
               "mcc": matthews_corrcoef(y_true, y_pred)}
    extras = {
        "average": average, "positive_label": labels[pos] if binary else None,
        # a guessed positive class changes precision/recall/F1: the report and metrics.json say it was guessed
        "positive_label_inferred": binary and positive_label is None,
        "per_class": classification_report(y_true, y_pred, labels=ids, target_names=labels, output_dict=True, zero_division=0),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(), "labels": labels,
        # what the bootstrap intervals resample (evaluation/significance.py)
        "per_example": {"classification": {"gold": list(y_true), "predicted": list(y_pred), "classes": len(labels),
                                           "average": average, "positive": pos if binary else None}},
    }
    if probabilities is not None:
        from adaptctl.evaluation.calibration import expected_calibration_error, reliability

        metrics["ece"] = expected_calibration_error(probabilities, y_true)
        extras["reliability"] = reliability(probabilities, y_true)
    return {k: float(v) for k, v in metrics.items()}, extras


def check_positive_label(positive_label: str | None, labels: list[str]):
    """A positive_label that is no label would silently score another class as positive."""
    if positive_label is None or positive_label in labels:
        return
    import difflib

    from adaptctl.core.errors import UserError

    guess = difflib.get_close_matches(str(positive_label), labels, n=1)
    hint = f"did you mean {guess[0]!r}? " if guess else ""
    raise UserError(f"evaluate.positive_label: {positive_label!r} is not a label of the data",
                    hint=f"{hint}the labels are: {', '.join(labels)}")


def _default_positive(labels: list[str]) -> int:
    # The rarer-sounding class is usually the one users care about (spam, positive, 1).
    for i, name in enumerate(labels):
        if name.lower() in ("spam", "positive", "pos", "1", "true", "yes"):
            return i
    return 1


# -------------------------------------------------------------- generation
def generation_metrics(predictions: list[str], references: list[list[str]] | list[str],
                       rouge_scores: list[dict] | None = None) -> dict:
    """ROUGE-1/2/L/Lsum (best over references, mean over examples), corpus BLEU and chrF, and exact match
    (percent, as for QA).  rouge_scores: rouge_per_example's, when the caller has them already."""
    return generation_scores(predictions, references, rouge_scores)[0]


def generation_scores(predictions: list[str], references: list[list[str]] | list[str],
                      rouge_scores: list[dict] | None = None) -> tuple[dict, dict]:
    """generation_metrics, and sacrebleu's signatures of its BLEU and chrF ({"bleu": "nrefs:1|case:mixed|
    eff:no|tok:13a|smooth:exp|version:2.6.0", "chrf": ...}): what makes a BLEU figure comparable with another
    paper's or tool's (Post 2018), so metrics.json records it beside the score."""
    from sacrebleu.metrics import BLEU, CHRF

    refs = [r if isinstance(r, list) else [r] for r in references]
    rouge = mean_rouge(rouge_scores if rouge_scores is not None else rouge_per_example(predictions, refs))
    ref_streams = reference_streams(refs)
    bleu, chrf = BLEU(), CHRF()  # sacrebleu's defaults: 13a tokenization, exponential smoothing, chrF2 on characters
    metrics = {**{k: float(v) for k, v in rouge.items()},
               "bleu": float(bleu.corpus_score(predictions, ref_streams).score),
               "chrf": float(chrf.corpus_score(predictions, ref_streams).score),
               "exact_match": exact_match(predictions, refs)}
    return metrics, {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def reference_streams(references: list[list[str]]) -> list[list[str]]:
    """sacrebleu's reference streams: the i-th reference of every example; an example with fewer
    references repeats its first (which changes neither BLEU's clipped counts nor chrF's best match)."""
    width = max(len(r) for r in references)
    return [[r[i] if i < len(r) else r[0] for r in references] for i in range(width)]


def sacrebleu_statistics(predictions: list[str], references: list[list[str]]) -> dict:
    """Each sentence's sufficient statistics of corpus BLEU and chrF (sacrebleu's own extraction, which its
    paired bootstrap sums over resamples): the bootstrap intervals recompute the corpus scores from them."""
    from sacrebleu.metrics import BLEU, CHRF

    streams = reference_streams(references)
    return {"bleu": BLEU()._extract_corpus_statistics(predictions, streams),
            "chrf": CHRF()._extract_corpus_statistics(predictions, streams)}


def rouge_per_example(predictions: list[str], references: list[list[str]]) -> list[dict]:
    """Each example's ROUGE F-measures, the best over its references ({type: fmeasure})."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    return [{name: score.fmeasure for name, score in scorer.score_multi(golds, _lsum_lines(p)).items()}
            for p, golds in zip(predictions, references)]


def mean_rouge(scores: list[dict]) -> dict:
    """Each ROUGE F-measure as the plain mean of the per-example scores.  Not rouge-score's
    BootstrapAggregator: the bootstrap's mid value is a resampled estimate that differs between runs."""
    return {name: sum(s[name] for s in scores) / max(len(scores), 1) for name in ROUGE_TYPES}


def _lsum_lines(text: str) -> str:
    # rougeLsum splits summaries on newlines; put one sentence per line.
    return "\n".join(s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s)


def perplexity(total_loss: float, total_tokens: int) -> float:
    return float(math.exp(total_loss / total_tokens)) if total_tokens else float("nan")


# ---------------------------------------------------------------- SQuAD QA
def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation, articles and extra spaces (the official SQuAD v1.1 script)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(predictions: list[str], golds: list[list[str]]) -> float:
    """Percent of predictions equal to one of their references after SQuAD normalisation (case, punctuation,
    articles, spaces): the score of short answers (math results, labels, entities) that ROUGE blurs."""
    em = exact_match_per_example(predictions, golds)
    return sum(em) / max(len(predictions), 1)


def exact_match_per_example(predictions: list[str], golds: list[list[str]]) -> list[float]:
    """100 or 0 for each example (exact_match is their mean)."""
    return [100 * max(float(normalize_answer(p) == normalize_answer(g)) for g in gs) for p, gs in zip(predictions, golds)]


# ------------------------------------------------------- generative QA
def extract_answer(text: str, pattern) -> str | None:
    """The answer in a text by evaluate.answer_pattern: its first group (the whole match if it has none);
    None when the pattern does not match."""
    found = pattern.search(text)
    if found is None:
        return None
    return (found.group(1) if pattern.groups else found.group(0) or "").strip()


def _number(text: str) -> float | None:
    """A number as answers write it ('1,234', '$5', '3.50.'), else None."""
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        return float(cleaned)
    except ValueError:
        return None


def _answer_scores(prediction: str, gold: str) -> tuple[float, float]:
    """(exact match, token F1): numbers compared as numbers ('18' = '18.0'), other answers after SQuAD normalisation."""
    a, b = _number(prediction), _number(gold)
    if a is not None and b is not None:
        same = float(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9))
        return same, same
    return float(normalize_answer(prediction) == normalize_answer(gold)), _token_f1(prediction, gold)


def same_answer(prediction: str, gold: str) -> bool:
    """Whether two extracted answers agree: as numbers where both parse as one, else after SQuAD normalisation."""
    return _answer_scores(prediction, gold)[0] == 1.0


# evaluate.answer_fallback last-number: the last number a text writes ('-3', '1,250', '2.5'), for models that
# answer in their own words and were never taught the pattern's format
LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_number(text: str) -> str | None:
    found = LAST_NUMBER.findall(text)
    return found[-1].rstrip(",") if found else None


def fallback_in_use(fallback: str, gold_answers: list[str]) -> bool:
    """auto: the last-number fallback where every reference answer is a number (math word problems)."""
    if fallback == "auto":
        return bool(gold_answers) and all(_number(a) is not None for a in gold_answers)
    return fallback == "last-number"


def answer_metrics(predictions: list[str], references: list[list[str]], pattern: str,
                   fallback: str = "none") -> tuple[dict, list[dict], dict]:
    """exact_match and f1 in percent over the answers evaluate.answer_pattern extracts from the generated and
    the reference texts (a reference it does not match is taken whole); a generation it does not match counts
    as wrong.  With a fallback (evaluate.answer_fallback), exact_match_fallback scores the same answers, and
    for a generation the pattern does not match, the fallback's (the last number): its own figure, so that
    "learnt the format" (unmatched) and "got the content right" are told apart.  Returns the metrics with the
    counts, each example's answers, and the per-example scores (evaluation/significance.py)."""
    compiled = re.compile(pattern)
    found = [extract_answer(p, compiled) for p in predictions]
    gold_rows = []
    for golds in references:
        answers = [extract_answer(g, compiled) for g in golds]
        gold_rows.append((all(a is None for a in answers), [a if a is not None else g for a, g in zip(answers, golds)]))
    use_fallback = fallback_in_use(fallback, [answers[0] for _, answers in gold_rows])
    rows, em, f1, em_fallback = [], [], [], []
    for prediction, answer, (_, gold_answers) in zip(predictions, found, gold_rows):
        scores = [(0.0, 0.0)] if answer is None else [_answer_scores(answer, g) for g in gold_answers]
        em.append(100 * max(s[0] for s in scores))
        f1.append(100 * max(s[1] for s in scores))
        row = {"predicted_answer": answer, "reference_answer": gold_answers[0]}
        if use_fallback:
            row["fallback_answer"] = answer if answer is not None else last_number(prediction)
            taken = row["fallback_answer"]
            em_fallback.append(0.0 if taken is None else 100 * max(_answer_scores(taken, g)[0] for g in gold_answers))
        rows.append(row)
    n = max(len(predictions), 1)
    unmatched = sum(a is None for a in found)
    metrics: dict[str, Any] = {"exact_match": sum(em) / n, "f1": sum(f1) / n, "unmatched": unmatched,
               "unmatched_references": sum(missing for missing, _ in gold_rows)}
    per_example = {"exact_match": em, "f1": f1}
    if use_fallback:
        metrics.update(exact_match_fallback=sum(em_fallback) / n, fallback="last-number",
                       fallback_found=sum(1 for a, r in zip(found, rows) if a is None and r["fallback_answer"] is not None))
        per_example["exact_match_fallback"] = em_fallback
    return metrics, rows, per_example


def squad_metrics(predictions: list[str], golds: list[list[str]]) -> dict:
    """exact_match and f1 in percent, each the best over an example's gold answers."""
    f1 = f1_per_example(predictions, golds)
    return {"exact_match": exact_match(predictions, golds), "f1": sum(f1) / max(len(predictions), 1)}


def f1_per_example(predictions: list[str], golds: list[list[str]]) -> list[float]:
    """Each example's token F1 in percent, the best over its gold answers (f1 is their mean)."""
    return [100 * max(_token_f1(p, g) for g in gs) for p, gs in zip(predictions, golds)]
