"""The distillation loss: alpha * T^2 * D(teacher_T || student_T) + (1 - alpha) * CE(labels),
plus, when asked, a hidden-state term that matches the student's layers to the teacher's.

Logits come as matching [rows, classes] tensors: one row per example for
classification, one per response token for causal-lm (the caller selects the
rows, and for a top-k teacher cache gathers the student's logits at the
teacher's k token ids, so both sides are distributions over the same k tokens).
The T^2 factor keeps the soft-target gradients on the scale of the label loss
as T changes (Hinton et al., 2015).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KINDS = ("kl", "reverse-kl", "jsd")
NO_LABEL = -100  # the label of an augmented copy (augment.py)


def divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, kind: str) -> torch.Tensor:
    """Mean over rows of D(teacher || student) between the tempered softmaxes (see row_divergence)."""
    if student_logits.shape[0] == 0:  # a batch with no response tokens
        return student_logits.sum() * 0.0
    return row_divergence(student_logits, teacher_logits, temperature, kind).mean()


def row_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, kind: str) -> torch.Tensor:
    """D(teacher || student) of each row, [rows].

    kl: KL(teacher || student), mass-covering; reverse-kl: KL(student || teacher),
    mode-seeking; jsd: Jensen-Shannon, 0.5 KL(t || m) + 0.5 KL(s || m), m = (t + s) / 2.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)

    def kl(log_p, log_q):  # KL(p || q) per row
        return (log_p.exp() * (log_p - log_q)).sum(-1)

    if kind == "kl":
        return kl(log_t, log_s)
    if kind == "reverse-kl":
        return kl(log_s, log_t)
    if kind == "jsd":
        log_m = torch.logsumexp(torch.stack([log_s, log_t]), dim=0) - math.log(2.0)
        return 0.5 * (kl(log_t, log_m) + kl(log_s, log_m))
    raise ValueError(f"unknown divergence {kind!r}; choose from {', '.join(KINDS)}")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, label_loss: torch.Tensor,
                      *, temperature: float, alpha: float, kind: str) -> torch.Tensor:
    """alpha * T^2 * D + (1 - alpha) * label_loss; alpha = 0 is exactly the label loss."""
    if alpha == 0:
        return label_loss
    soft = divergence(student_logits, teacher_logits, temperature, kind) * temperature ** 2
    return alpha * soft if alpha == 1 else alpha * soft + (1 - alpha) * label_loss


def transfer_set_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      *, temperature: float, alpha: float, kind: str, label_loss=None) -> torch.Tensor:
    """Mean over rows of: alpha * T^2 * D + (1 - alpha) * CE for a labelled row, and T^2 * D alone for an
    augmented copy (labels == -100), whose only target is the teacher's.  label_loss (a LabelLoss): CE
    with the recipe's class weights (each row's loss times its class's weight) and label smoothing."""
    soft = row_divergence(student_logits, teacher_logits, temperature, kind) * temperature ** 2
    labelled = labels != NO_LABEL
    if label_loss is not None:
        hard = label_loss.rows(student_logits, labels.clamp(min=0))
    else:
        hard = F.cross_entropy(student_logits.float(), labels.clamp(min=0), reduction="none")
    return torch.where(labelled, alpha * soft + (1 - alpha) * hard, soft).mean()


def hidden_state_loss(student_hidden: tuple, teacher_hidden: tuple, teacher_layers: list[int],
                      attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the student's layers of 1 - cos(student layer output, the teacher layer it matches),
    averaged over non-padding tokens (DistilBERT's cosine loss, PKD's layer matching).

    Hidden states are indexed like the models' own tuples, embeddings first: student layer j is [j + 1],
    teacher layer t is [t + 1] (the teacher's may be a dict holding just the matched layers).
    """
    mask = attention_mask.bool()
    losses = [1 - F.cosine_similarity(student_hidden[j + 1][mask].float(), teacher_hidden[t + 1][mask].float(),
                                      dim=-1).mean()
              for j, t in enumerate(teacher_layers)]
    return torch.stack(losses).mean()


def response_rows(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """causal-lm: the [tokens, vocab] logits that predict a response token.

    Position p predicts token p + 1, so it counts when labels[p + 1] != -100 (the
    same shift the model's own loss makes).  Rows come in batch order, then position.
    """
    from adaptctl.training.response_logits import trained_positions

    logits = logits[:, -labels.shape[1]:]  # prompt-tuning prepends virtual tokens to the logits
    return logits[trained_positions(labels)[0]]
