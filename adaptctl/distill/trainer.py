"""The distillation Trainer: the student's loss mixes the teacher's soft targets
with the labels (losses.py); the teacher runs frozen under inference_mode, or
its logits come from the cache by example index.

Examples carry a global `idx` (train rows 0..n-1, validation rows after them)
through the collator so that cached logits can be looked up; it never reaches
the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adaptctl.distill.losses import distillation_loss, response_rows
from adaptctl.distill.teacher import teacher_forward
from adaptctl.training.session import MODEL_INPUTS, GuardedTrainer, TrainingSession

INDEX = "idx"


@dataclass(frozen=True)
class SoftTargets:
    """Where the teacher's logits come from, and how they enter the loss."""
    temperature: float
    alpha: float
    kind: str
    causal: bool
    precision: str = "auto"
    teacher: object = None          # a live teacher model, or None with a cache (or alpha = 0)
    cache: object = None            # a LogitsCache
    permutation: list | None = None  # teacher logit columns in the data's label order


class IndexCollator:
    """Wraps a task collator: takes `idx` off each example, collates the rest, puts it back as a tensor."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, features):
        if not features or INDEX not in features[0]:
            return self.inner(features)
        index = torch.tensor([f[INDEX] for f in features], dtype=torch.long)
        batch = self.inner([{k: v for k, v in f.items() if k != INDEX} for f in features])
        batch[INDEX] = index
        return batch


class DistillTrainer(GuardedTrainer):
    def __init__(self, *args, soft: SoftTargets, data_collator=None, **kwargs):
        super().__init__(*args, data_collator=IndexCollator(data_collator), **kwargs)
        self.soft = soft
        # compute_loss returns a per-micro-batch mean: the Trainer divides it by the accumulation steps.
        self.loss_is_scaled_for_ga = False
        if soft.teacher is not None:
            soft.teacher.to(self.args.device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        index = inputs.pop(INDEX, None)
        outputs = model(**inputs)  # with labels: the model's own label loss, as in train
        student = teacher = None
        if self.soft.alpha > 0:
            student, teacher = self._pair(outputs.logits, inputs, index)
        loss = distillation_loss(student, teacher, outputs.loss, temperature=self.soft.temperature,
                                 alpha=self.soft.alpha, kind=self.soft.kind)
        return (loss, outputs) if return_outputs else loss

    def _pair(self, logits, inputs, index):
        """Matching (student, teacher) logit rows: one per example, or one per response token."""
        soft, labels = self.soft, inputs.get("labels")
        if soft.cache is not None:
            if not soft.causal:
                return logits, soft.cache.rows(index).to(logits.device)
            values, ids = soft.cache.tokens(index)
            student = response_rows(logits, labels)
            _same_tokens(student, values)
            return student.gather(-1, ids.to(logits.device)), values.to(logits.device)
        teacher = teacher_forward(soft.teacher, inputs, soft.precision)
        if soft.permutation is not None:
            teacher = teacher[..., soft.permutation]
        if soft.causal:
            return response_rows(logits, labels), response_rows(teacher, labels)
        return logits, teacher


def _same_tokens(student_rows, cached_rows):
    if student_rows.shape[0] != cached_rows.shape[0]:
        from adaptctl.errors import RunFailed

        raise RunFailed(f"the teacher logits cache holds {cached_rows.shape[0]} response tokens for this batch, "
                        f"the batch has {student_rows.shape[0]}",
                        hint="delete RUN_DIR/prepare/teacher_logits and run distill again")


class DistillSession(TrainingSession):
    """TrainingSession that keeps the example index in both the train and validation splits."""

    def _model_columns(self, split):
        ds = self.data[split]
        return ds.remove_columns([c for c in ds.column_names if c not in MODEL_INPUTS and c != INDEX])
