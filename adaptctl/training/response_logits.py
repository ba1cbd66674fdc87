"""Causal-LM loss computed from the logits of trained positions only.

With response-only loss most positions are prompt (-100 labels), yet a causal LM
computes vocabulary logits at every position: on SmolLM2 the LM head is a fifth of
the model's matmul work and its (batch x length x 49,152) logits dominate memory.
A forward pre-hook on the output embedding hands it only the hidden states whose
next token is trained, and the cross-entropy runs on those rows.  The forward call
itself is the model's own (DDP, FSDP and peft wrappers see a normal call); only
the LM head's input shrinks.  The loss is the same sum / num_items_in_batch the
model's own ForCausalLMLoss computes (tests/test_response_logits.py).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F


def trained_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask over positions whose logits predict a trained token, those tokens)."""
    targets = labels[:, 1:]
    keep = targets != -100
    return F.pad(keep, (0, 1), value=False), targets[keep]


@contextmanager
def head_sees_only(head: torch.nn.Module, mask: torch.Tensor):
    """While active, `head` is applied to hidden_states[mask] (rows x hidden) instead of every position."""

    def select(_module, args):
        hidden = args[0]
        # Prompt tuning prepends virtual tokens: the real positions are the last ones.
        hidden = hidden[:, hidden.shape[1] - mask.shape[1]:]
        return (hidden[mask], *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


def forward_on_trained_positions(model, head, inputs: dict):
    """(outputs, targets, mask): the model's forward without labels, its logits (trained positions x vocab)
    row-major over `mask`, and the tokens they predict."""
    mask, targets = trained_positions(inputs["labels"])
    with head_sees_only(head, mask):
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
    return outputs, targets, mask


def response_only_loss(model, head, inputs: dict, num_items_in_batch=None):
    """(loss, outputs) of a causal LM whose LM head runs on the trained positions only."""
    outputs, targets, _ = forward_on_trained_positions(model, head, inputs)
    loss = F.cross_entropy(outputs.logits.float(), targets, reduction="sum")
    if num_items_in_batch is None:
        return loss / max(targets.numel(), 1), outputs
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch, outputs
