"""Whole-column facts of a `datasets.Dataset` computed in Arrow, never as Python lists.

`ds["label"]` is a lazy column in datasets 4+: iterating it formats one row at a time (about 0.1 ms a
row here, 90 s over a million), and a list of a million token lists costs gigabytes.  These read the
column as Arrow (through the dataset's indices mapping, so a `select`ed split reads its own rows) and
let pyarrow's kernels count, sum and find; list columns are read a batch of about BATCH_ITEMS items at
a time, so memory stays flat however many rows there are and however long each row's list is.
"""

from __future__ import annotations

BATCH_ITEMS = 1 << 20  # items of a list column (token ids) read at once: 8 MB of int64
BATCH_ROWS = 1_000     # and never more rows than this, should the lists grow longer than those read so far


def column(ds, name: str):
    """The column as a pyarrow ChunkedArray (the split's own rows, in order).  A `select`ed split's rows
    are taken in Arrow: datasets' own column query through an indices mapping gathers one RecordBatch a
    row, 560 MB of objects that stayed allocated for a million rows (issue 38)."""
    indices = getattr(ds, "_indices", None)  # the rows a select/shuffle kept; datasets has no public accessor
    if indices is None:
        return ds.with_format("arrow")[name]  # a slice of the memory-mapped file, nothing copied
    return ds.data.table.column(name).take(indices.column(0))


def sorted_codes(ds, name: str):
    """The column as numpy int codes, numbered in the sorted order of its distinct values: the
    `return_inverse` of np.unique over its values, which is all a stratified split needs of them,
    without a Python string per row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = column(ds, name)
    return pc.index_in(values, value_set=pa.array(sorted(distinct(ds, name)), type=values.type)).to_numpy()


def numbers(ds, name: str):
    """A numeric column as a numpy array."""
    import numpy as np

    values = column(ds, name)
    return values.to_numpy() if len(values) else np.zeros(0, dtype=np.int64)


def total(ds, name: str) -> int:
    """The sum of a numeric (or boolean) column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = column(ds, name)
    if pa.types.is_boolean(values.type):
        values = pc.cast(values, pa.int64())
    return int(pc.sum(values).as_py() or 0)


def distinct(ds, name: str) -> list:
    """The column's distinct values, in order of first appearance."""
    import pyarrow.compute as pc

    return pc.unique(column(ds, name)).to_pylist()


def counts(ds, name: str) -> dict:
    """value -> rows holding it, in order of first appearance."""
    import pyarrow.compute as pc

    found = pc.value_counts(column(ds, name)).to_pylist()
    return {entry["values"]: entry["counts"] for entry in found}


def first_index(ds, name: str, values: list) -> int | None:
    """The first row (0-based) whose value is one of `values`, or None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not values:
        return None
    data = column(ds, name)
    found = pc.index(pc.is_in(data, value_set=pa.array(values, type=data.type)), True).as_py()
    return None if found < 0 else found


def count_in_lists(ds, name: str, value: int, ignore: int | None = None) -> tuple[int, int]:
    """(items equal to `value`, items) over every list of a list column (token ids), a batch at a time;
    items equal to `ignore` (labels' -100) are not counted at all."""
    import pyarrow.compute as pc

    hits = items = 0
    for lists in list_batches(ds, name):
        flat = pc.list_flatten(lists)
        if ignore is not None:
            flat = pc.filter(flat, pc.not_equal(flat, ignore))
        hits += int(pc.sum(pc.equal(flat, value)).as_py() or 0)
        items += len(flat)
    return hits, items


def list_batches(ds, name: str):
    """A list column as ChunkedArrays in row order, each about BATCH_ITEMS items (one row at least, at
    most BATCH_ROWS rows), the rows taken from the lengths of the batch before.  A fixed count of rows
    reads more the longer the lists are: 10,000 packed blocks of 2,048 tokens were 160 MB a batch, with
    as much again for each kernel's result (issue 38)."""
    import pyarrow.compute as pc

    table = ds.select_columns([name]).with_format("arrow")
    start, rows = 0, 1
    while start < len(table):
        lists = table[start:start + rows][name]
        yield lists
        start += len(lists)
        items = int(pc.sum(pc.list_value_length(lists)).as_py() or 0)
        rows = min(BATCH_ROWS, max(1, BATCH_ITEMS * len(lists) // max(items, 1)))
