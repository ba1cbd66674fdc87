"""The labels a split's rows hold, read once for prepare's label map and counts and evaluate's label shares."""

from __future__ import annotations


def label_counts(split, labels_of) -> dict[str, int]:
    """label -> how many times it occurs in the split's `label` column.  A column of one string label per row
    is counted in Arrow, without a Python list of the rows; otherwise each row's labels are read as the task
    reads them (`labels_of`: one for a classifier, one per word for a token classifier)."""
    from collections import Counter

    from adaptctl.data import columnar

    if getattr(split.features.get("label"), "dtype", None) == "string":
        return columnar.counts(split, "label")
    return dict(Counter(label for value in split["label"] for label in labels_of(value)))
