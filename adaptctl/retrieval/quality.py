"""How well retrieval found the passage that answers each question: recall@n (the share of questions whose
gold passage is among the first n retrieved) and MRR@10 (the mean of 1 / its rank, 0 below rank 10), over
the questions whose gold passage the data names."""

from __future__ import annotations

CUTOFFS = (1, 3, 5, 10)
MRR_DEPTH = 10
METRICS = tuple(f"recall_at_{n}" for n in CUTOFFS) + (f"mrr_at_{MRR_DEPTH}",)


def ranks(ranked: list[list[str]], gold: list[str]) -> list[int | None]:
    """The gold passage's 1-based rank per question (None: not retrieved, or the data names none)."""
    return [ids.index(g) + 1 if g and g in ids else None for ids, g in zip(ranked, gold)]


def retrieval_metrics(ranked: list[list[str]], gold: list[str], k: int | None = None) -> dict:
    """recall_at_{1,3,5,10} (and at k), mrr_at_10, in [0, 1], over the questions with a gold passage;
    `questions` and `with_gold` count them."""
    found = [rank for rank, g in zip(ranks(ranked, gold), gold) if g]
    document: dict[str, float] = {"questions": len(ranked), "with_gold": len(found)}
    if not found:
        return document
    depth = max((len(ids) for ids in ranked), default=0)
    for n in sorted({*CUTOFFS, *([k] if k else [])}):
        if n <= depth:
            document[f"recall_at_{n}"] = round(sum(1 for r in found if r is not None and r <= n) / len(found), 6)
    document[f"mrr_at_{MRR_DEPTH}"] = round(sum(1 / r for r in found if r is not None and r <= MRR_DEPTH) / len(found), 6)
    return document
