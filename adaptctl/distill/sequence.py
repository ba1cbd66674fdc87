"""Sequence-level distillation from a model behind an API (distill.teacher: {api: {...}}).

The teacher labels (classification) or answers (generation) the training inputs through the task's
ApiForm, with the recipe's own prompt, and the student trains on those outputs as on gold data: Kim and
Rush's sequence-level knowledge distillation, the field's usual way to build a small model from a large
one that shows only its answers.  `distill.alpha` is the share of training rows (drawn with the seed) that
take the teacher's answer; the rest keep their gold one.  Rows whose answer the task cannot read (no label
named, or a refused request) are left out of the training set and counted.  Every answer is cached under
the run as it arrives, so a run killed half-way asks only for the rest when it is run again.
"""

from __future__ import annotations

import random

from adaptctl.core import console


def taught_split(train, outputs: list, answer_column: str, alpha: float, seed: int):
    """The train split with the teacher's outputs in the answer column (for the alpha share of rows), its
    unreadable rows left out: (split, figures for the manifest)."""
    rng = random.Random(seed)
    gold = list(train[answer_column])
    chosen = [rng.random() < alpha for _ in gold]
    keep = [i for i, (output, taught) in enumerate(zip(outputs, chosen)) if not taught or output is not None]
    values = [outputs[i] if chosen[i] else gold[i] for i in keep]
    split = train.select(keep).remove_columns([answer_column])
    split = split.add_column(answer_column, values)
    taught = sum(chosen[i] for i in keep)
    readable = [(o, g) for o, g, c in zip(outputs, gold, chosen) if c and o is not None]
    figures = {"teacher_rows": taught, "gold_rows": len(keep) - taught,
               "unreadable_answers": sum(1 for o, c in zip(outputs, chosen) if c and o is None),
               # labels only: generated texts that equal the reference word for word say little
               "teacher_gold_agreement": round(sum(o == g for o, g in readable) / len(readable), 6)
               if readable and answer_column == "label" else None}
    console.info(f"distill: the student trains on {taught} teacher answers and {len(keep) - taught} gold ones "
                 f"({figures['unreadable_answers']} unreadable answers left out)")
    return split, figures
