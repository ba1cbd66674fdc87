"""The forgetting check (evaluate.general): what continued pretraining on a domain cost on general text.

Both models are scored by the very evaluation that scored the domain split (the task's evaluate
hook), so the general perplexity means what the domain perplexity means: the same tokenization into
windows or packed blocks and, for masked-lm, the same seeded whole-word masks for base and adapted.
A rise in general perplexity while the domain perplexity falls is forgetting.
"""

from __future__ import annotations

import math


def general_document(general: dict, adapted, base, base_name: str) -> dict:
    """metrics.json `general`: where the text came from, how much was scored, both perplexities and
    the change (adapted - base; above 0: the adapted model predicts general text worse)."""
    ours, theirs = adapted.metrics["perplexity"], base.metrics["perplexity"] if base is not None else None
    document = {"source": general["source"], "text": general["text"], "examples": general["texts"],
                "rows": len(general["split"]), "scored_tokens": scored_tokens(adapted),
                "perplexity": _rounded(ours), "base_model": base_name, "base_perplexity": _rounded(theirs)}
    if _finite(ours) and _finite(theirs):
        document["change"] = round(ours - theirs, 6)
        document["change_percent"] = round(100 * (ours - theirs) / theirs, 2) if theirs else None
    return document


def scored_tokens(result) -> int | None:
    """The tokens a perplexity averages over: masked tokens (masked-lm) or every predicted token (causal-lm)."""
    masking = result.extras.get("masking") or {}
    return masking.get("masked_tokens", result.extras.get("reference_tokens"))


def _rounded(value):
    return round(value, 6) if _finite(value) else None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
