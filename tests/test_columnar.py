"""data/columnar.py: whole-column facts read in Arrow a bounded batch at a time (issue 38)."""

from __future__ import annotations


def test_list_columns_are_read_in_batches_of_about_batch_items_whatever_the_list_length(monkeypatch):
    from datasets import Dataset

    from adaptctl.data import columnar

    monkeypatch.setattr(columnar, "BATCH_ITEMS", 100)
    monkeypatch.setattr(columnar, "BATCH_ROWS", 20)
    lists = [[i % 7] * (2 if i < 60 else 50) for i in range(90)]  # read backwards: long rows (blocks), then short
    ds = Dataset.from_dict({"ids": lists, "other": list(range(90))}).select(range(89, -1, -1))  # through indices
    batches = [batch.to_pylist() for batch in columnar.list_batches(ds, "ids")]
    assert [row for batch in batches for row in batch] == lists[::-1]
    long_rows = [batch for batch in batches if len(batch[0]) == 50]
    assert long_rows and all(sum(map(len, batch)) <= 100 for batch in long_rows)  # 2 blocks a batch, not 20
    assert max(map(len, batches)) == 20  # short rows many at a time, never more than BATCH_ROWS
    labels = [[-100 if j == 0 else v for j, v in enumerate(row)] for row in lists]
    flat = [v for row in labels for v in row if v != -100]
    assert columnar.count_in_lists(Dataset.from_dict({"labels": labels}), "labels", 3, ignore=-100) == \
        (flat.count(3), len(flat))


def test_a_selected_splits_column_is_taken_in_arrow_and_coded_in_sorted_order():
    import numpy as np
    from datasets import Dataset

    from adaptctl.data import columnar

    labels = ["sports", "world", "business", "sports", "tech", "world"] * 50
    picked = np.random.default_rng(0).permutation(300)[:200]
    split = Dataset.from_dict({"label": labels, "n": list(range(300))}).select(picked)
    found = columnar.column(split, "label")
    assert found.to_pylist() == [labels[i] for i in picked]
    assert found.num_chunks < 5  # not one chunk a row, as datasets' own column query through the indices gathers
    codes = columnar.sorted_codes(split, "label")
    assert codes.tolist() == np.unique([labels[i] for i in picked], return_inverse=True)[1].tolist()
