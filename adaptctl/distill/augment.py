"""A transfer set for classification distillation: noisy copies of the training rows.

The teacher has seen its own training rows and is near-certain on them, so its
soft targets there say little beyond the labels.  On perturbed copies of those
rows it is not, and matching it there teaches the student how the teacher's
decision changes around the data (Tang et al. 2019, "Distilling task-specific
knowledge from BERT into simple neural networks"; TinyBERT's augmentation).

Each copy masks every ordinary token with probability `mask` (the tokenizer's
mask token, else its unknown token) and, with probability `span`, keeps only a
random run of 1 to `max_span` tokens (Tang et al.'s n-gram sampling); special
tokens ([CLS], [SEP]) stay.  Copies carry no label (labels = -100): the loss
on them is the soft-target term alone.  The copies are seeded, so the teacher
logit cache can hold them.
"""

from __future__ import annotations

import numpy as np

from adaptctl.data.tokens import ENCODER_INPUTS
from adaptctl.distill.losses import NO_LABEL



def augmented_rows(train, tokenizer, settings, seed: int):
    """`settings.copies` noisy copies of every row of the tokenized `train` split, without labels."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    special = set(tokenizer.all_special_ids)
    replacement = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
    if replacement is None and settings.mask > 0:
        from adaptctl.core.errors import UserError

        raise UserError("distill.augment.mask: this tokenizer has neither a mask nor an unknown token to mask with",
                        hint="set distill.augment.mask: 0 and let the copies differ by their cut spans (distill.augment.span)")
    columns = [c for c in ENCODER_INPUTS if c in train.column_names]
    rows = train.select_columns(columns).to_list()
    copies = []
    for _ in range(settings.copies):
        for row in rows:
            copy = perturb(row, special, replacement, settings, rng)
            copies.append({**copy, "labels": NO_LABEL, "num_tokens": len(copy["input_ids"])})
    return Dataset.from_list(copies)


def perturb(row: dict, special: set, replacement: int, settings, rng) -> dict:
    """One noisy copy of a tokenized row: a random span of its ordinary tokens, then masked tokens."""
    ordinary = [i for i, token in enumerate(row["input_ids"]) if token not in special]
    keep = set(range(len(row["input_ids"])))
    if ordinary and rng.random() < settings.span:
        length = int(rng.integers(1, min(settings.max_span, len(ordinary)) + 1))
        start = int(rng.integers(0, len(ordinary) - length + 1))
        dropped = set(ordinary) - set(ordinary[start:start + length])
        keep -= dropped
    positions = sorted(keep)
    copy = {column: [values[p] for p in positions] for column, values in row.items()}
    copy["input_ids"] = [replacement if token not in special and rng.random() < settings.mask else token
                         for token in copy["input_ids"]]
    return copy
