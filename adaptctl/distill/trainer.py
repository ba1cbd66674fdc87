"""The distillation Trainer: the student's loss mixes the teacher's soft targets
with the labels (losses.py); the teacher runs frozen under inference_mode, or
its logits come from the cache by example index.

Examples carry a global `idx` (train rows 0..n-1, validation rows after them)
through the collator so that cached logits can be looked up; it never reaches
the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from adaptctl.distill.losses import distillation_loss, hidden_state_loss, response_rows, transfer_set_loss
from adaptctl.distill.teacher import teacher_outputs
from adaptctl.training.session import GuardedTrainer

INDEX = "idx"


@dataclass(frozen=True)
class SoftTargets:
    """Where the teacher's logits come from, and how they enter the loss."""
    temperature: float
    alpha: float
    kind: str
    causal: bool
    precision: str = "auto"
    teacher: Any = None             # a live teacher model, or None with a cache (or alpha = 0)
    cache: object = None            # a LogitsCache
    permutation: list | None = None  # teacher logit columns in the data's label order
    transfer: bool = False          # the train split holds unlabelled augmented copies (augment.py)
    hidden_weight: float = 0.0      # weight of the hidden-state term (losses.hidden_state_loss)
    teacher_layers: list | None = None  # the teacher layer each student layer matches


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
        soft = self.soft
        index = inputs.pop(INDEX, None)
        # Augmented copies carry no label, which the model's own loss cannot skip: the loss is then per row.
        labels = inputs.pop("labels") if soft.transfer else inputs.get("labels")
        outputs = model(**inputs, output_hidden_states=True) if soft.hidden_weight else model(**inputs)
        teacher_logits, teacher_hidden = self._teacher(inputs, index)
        if soft.transfer:
            loss = transfer_set_loss(*self._pair(outputs.logits, teacher_logits, labels), labels,
                                     temperature=soft.temperature, alpha=soft.alpha, kind=soft.kind,
                                     label_loss=self.label_loss)
        else:  # with labels in the inputs, outputs.loss is the model's own label loss, as in train
            student, teacher = self._pair(outputs.logits, teacher_logits, labels) if soft.alpha > 0 else (None, None)
            loss = distillation_loss(student, teacher, self._label_term(outputs, labels), temperature=soft.temperature,
                                     alpha=soft.alpha, kind=soft.kind)
        if soft.hidden_weight:
            loss = loss + soft.hidden_weight * hidden_state_loss(outputs.hidden_states, teacher_hidden,
                                                                 soft.teacher_layers, inputs["attention_mask"])
        return (loss, outputs) if return_outputs else loss

    def _label_term(self, outputs, labels):
        """The label loss as train computes it: class weights and label smoothing where the recipe sets them."""
        if self.label_loss is None or labels is None:
            return outputs.loss
        return self.label_loss(outputs.logits, labels)

    def _teacher(self, inputs, index):
        """The teacher's logits (a cached (values, ids) pair for a causal LM's top-k) and hidden states."""
        soft = self.soft
        if soft.alpha == 0 and not soft.hidden_weight:
            return None, None  # labels only: the teacher never runs
        if soft.cache is not None:
            return (soft.cache.tokens(index) if soft.causal else soft.cache.rows(index)), None
        logits, hidden = teacher_outputs(soft.teacher, inputs, soft.precision,
                                         layers=soft.teacher_layers if soft.hidden_weight else None)
        if soft.permutation is not None:
            logits = logits[..., soft.permutation]
        return logits, hidden

    def _pair(self, logits, teacher, labels):
        """Matching (student, teacher) logit rows: one per example, or one per response token."""
        if not self.soft.causal:
            return logits, teacher.to(logits.device)
        student = response_rows(logits, labels)
        if isinstance(teacher, tuple):  # the cache's top-k: the student's logits at the teacher's k tokens
            values, ids = teacher
            _same_tokens(student, values)
            return student.gather(-1, ids.to(logits.device)), values.to(logits.device)
        return student, response_rows(teacher, labels)


def _same_tokens(student_rows, cached_rows):
    if student_rows.shape[0] != cached_rows.shape[0]:
        from adaptctl.core.errors import RunFailed

        raise RunFailed(f"the teacher logits cache holds {cached_rows.shape[0]} response tokens for this batch, "
                        f"the batch has {student_rows.shape[0]}",
                        hint="delete RUN_DIR/prepare/teacher_logits and run distill again")
