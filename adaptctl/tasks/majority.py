"""The majority-class baseline of a classifier (`evaluate.baseline: majority`; stages/baselines.py chooses it)."""

from __future__ import annotations

from adaptctl.core.errors import UserError


def majority_class(split, train_split, recipe, label2id: dict):
    """Every example predicted as the train split's most frequent label; the probabilities are the
    train split's label shares (the prior a model that read no text would give).  Ties go to the
    label with the lower id, so the choice does not depend on row order."""
    from collections import Counter

    from adaptctl.evaluation import EvalResult
    from adaptctl.evaluation.metrics import classification_metrics

    if train_split is None or len(train_split) == 0:
        raise UserError("evaluate.baseline: the majority-class baseline counts the train split's labels, "
                        "and the prepared data has no train rows",
                        hint="give the data a train split, or set evaluate.baseline: none")
    labels = sorted(label2id, key=label2id.__getitem__)
    counts = Counter(train_split["label"])
    shares = [counts.get(name, 0) / len(train_split) for name in labels]
    majority = max(range(len(labels)), key=lambda i: (shares[i], -i))
    gold = [label2id[name] for name in split["label"]]
    metrics, extras = classification_metrics(gold, [majority] * len(gold), labels, recipe.evaluate.average,
                                             recipe.evaluate.positive_label, [shares] * len(gold))
    probabilities = dict(zip(labels, (round(p, 6) for p in shares)))
    predictions = [{"input": text, "reference": name, "prediction": labels[majority], "score": round(shares[majority], 6),
                    "probabilities": probabilities} for text, name in zip(split["text"], split["label"])]
    extras.update(majority_label=labels[majority], train_share=round(shares[majority], 6))
    return EvalResult(metrics=metrics, predictions=predictions, examples_per_second=None, extras=extras)
