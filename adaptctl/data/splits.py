"""Deterministic train/validation/test splits, stratified for classification."""

from __future__ import annotations

from adaptctl.core.errors import UserError


def split_indices(n: int, validation: float, test: float, seed: int, strata=None) -> dict:
    """Row indices (numpy arrays: a list of ten million Python ints costs 360 MB) per split; `strata`, a
    list or numpy array of each row's class, stratifies them."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    indices = np.arange(n)  # the same draws as a list of the same numbers: sklearn indexes either alike
    held = validation + test
    empty = np.zeros(0, dtype=indices.dtype)
    if held == 0:
        return {"train": indices, "validation": empty, "test": empty}
    try:
        train, rest = train_test_split(indices, test_size=held, random_state=seed, stratify=strata)
        if validation == 0 or test == 0:
            named = "validation" if validation else "test"
            return {"train": train, named: rest, ("test" if validation else "validation"): empty}
        rest_strata = np.asarray(strata)[rest] if strata is not None else None
        val, tst = train_test_split(rest, test_size=test / held, random_state=seed, stratify=rest_strata)
    except ValueError as exc:
        raise UserError(f"data.splits: cannot split {n} rows that way ({exc})",
                        hint="use more data, smaller validation/test fractions, or stratify: false") from None
    return {"train": train, "validation": val, "test": tst}


def group_split_indices(groups: list, validation: float, test: float, seed: int) -> dict[str, list[int]]:
    """Row indices per split with every row of one group (equal values in `groups`) in the same split:
    the fractions are drawn over the distinct groups, in order of first appearance, under the seed."""
    index_of, rows_of = {}, list[list[int]]()
    for row, group in enumerate(groups):
        if group not in index_of:
            index_of[group] = len(rows_of)
            rows_of.append([])
        rows_of[index_of[group]].append(row)
    parts = split_indices(len(rows_of), validation, test, seed, None)
    return {name: sorted(row for g in picked for row in rows_of[g]) for name, picked in parts.items()}
