"""evaluate's side of data.retrieval (docs/kbqa.md): how well retrieval found each question's gold passage
(recall@k, MRR@10, from the columns prepare carried), and the answers of three models side by side: the
evaluated one (the adapted reader, or with method prompting the base model reading the passages), the
baseline (the base model reading the same passages: RAG without training), and the closed-book base model
(the question alone), each also sliced by whether the gold passage was among the passages shown.

Adds `retrieval`, `closed_book` and `retrieval_slices` to metrics.json, `passage_ids` and `gold_retrieved`
to every prediction row, and evaluate/predictions.closed_book.jsonl.
"""

from __future__ import annotations

from adaptctl.core import console
from adaptctl.run.context import StageContext
from adaptctl.retrieval import CLOSED_BOOK, GOLD, RANKED, SHOWN
from adaptctl.tasks import get_task

CLOSED_BOOK_FILE = "predictions.closed_book.jsonl"
SLICES = {"gold retrieved": True, "gold not retrieved": False}


def retrieves(recipe) -> bool:
    """Whether the prompts held retrieved passages (data.retrieval on a task that reads them)."""
    return recipe.data.retrieval is not None and get_task(recipe.task).retrieval_use(recipe.data) == "prompt"


def retrieval_figures(ctx: StageContext, data, split, main, baseline, kind: str | None, compared, tokenizer,
                      label2id: dict) -> dict:
    """{"document": metrics.json's additions, "closed_book": the closed-book EvalResult}."""
    from adaptctl.evaluation.metrics import selected
    from adaptctl.retrieval.quality import retrieval_metrics

    recipe, settings = ctx.recipe, ctx.recipe.data.retrieval
    assert settings is not None  # called where retrieves(recipe)
    quality = retrieval_metrics(split[RANKED], split[GOLD], settings.k)
    found = [bool(g) and g in shown for shown, g in zip(split[SHOWN], split[GOLD])]
    closed = _closed_book(ctx, data, split, compared, tokenizer, label2id)
    results = {_label(recipe): main, **({kind: baseline} if baseline is not None else {}), "closed-book": closed}
    for result in results.values():
        for row, ids, hit, gold in zip(result.predictions, split[SHOWN], found, split[GOLD]):
            row.update(passage_ids=ids, gold_retrieved=hit if gold else None)
    document = {"retrieval": {"k": settings.k, **quality, "embedder": settings.embedder},
                "closed_book": {"kind": "closed-book", "model": compared.name,
                                "metrics": selected(closed.metrics, recipe.evaluate.metrics)},
                "retrieval_slices": _slices(results, found, [bool(g) for g in split[GOLD]], recipe)}
    _say(document)
    return {"document": document, "closed_book": closed}


def _label(recipe) -> str:
    from adaptctl.methods import get_method

    return "adapted" if get_method(recipe.method.name).trains else "rag-prompting"


def _closed_book(ctx: StageContext, data, split, compared, tokenizer, label2id: dict):
    """The base model given the question alone: the closed-book prompts prepare rendered, encoded as the
    task encodes every prompt, and scored by the task's prompting evaluation."""
    from adaptctl.stages.evaluate_base import evaluator, load_compared

    recipe, task = ctx.recipe, get_task(ctx.recipe.task)
    kept = [c for c in ("prompt", "response", "references") if c in split.column_names] + [CLOSED_BOOK]
    prompts = split.select_columns(kept).map(lambda row: {"prompt": row[CLOSED_BOOK]}, desc="closed-book prompts")
    encoded = task.tokenize(prompts, tokenizer, recipe, label2id)
    evaluate, model_task = evaluator(recipe, task, data, by_prompting=True)
    console.info(f"evaluate: closed-book baseline, base model {compared.name} without passages")
    model = load_compared(ctx, model_task, compared, tokenizer, label2id)
    result = evaluate(model, tokenizer, encoded, recipe, label2id)
    del model
    return result


def _answer_metrics(rows: list[dict], recipe) -> dict:
    """exact_match and f1 (SQuAD's, or over evaluate.answer_pattern's answers) of prediction rows."""
    from adaptctl.evaluation.metrics import answer_metrics, squad_metrics

    predictions = [row["prediction"] for row in rows]
    references = [row.get("references") or [row["reference"]] for row in rows]
    if not rows:
        return {}
    pattern = recipe.evaluate.answer_pattern
    found = answer_metrics(predictions, references, pattern)[0] if pattern else squad_metrics(predictions, references)
    return {"exact_match": round(found["exact_match"], 4), "f1": round(found["f1"], 4)}


def _slices(results: dict, found: list[bool], named: list[bool], recipe) -> dict:
    """Each model's exact_match and f1 on the questions whose gold passage was shown, and on the others."""
    slices = {}
    for name, hit in SLICES.items():
        rows = [i for i, (f, n) in enumerate(zip(found, named)) if n and f == hit]
        slices[name] = {"count": len(rows), **{label: _answer_metrics([result.predictions[i] for i in rows], recipe)
                                               for label, result in results.items()}}
    return slices


def _say(document: dict):
    quality, closed = document["retrieval"], document["closed_book"]["metrics"]
    k = quality["k"]
    if quality.get("with_gold"):
        console.info(f"evaluate: retrieval recall@{k} = {quality.get(f'recall_at_{k}', 0):.4f}, "
                     f"MRR@10 = {quality.get('mrr_at_10', 0):.4f} ({quality['with_gold']} questions with a gold passage)")
    console.info(f"evaluate: closed-book exact_match = {closed.get('exact_match', 0):.4f}, f1 = {closed.get('f1', 0):.4f}")


def write_outputs(out, figures: dict) -> dict:
    """predictions.closed_book.jsonl; the outputs entry for the manifest."""
    import json

    from adaptctl.core.rundir import atomic_write_text

    rows = figures["closed_book"].predictions
    atomic_write_text(out / CLOSED_BOOK_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {"closed_book_predictions": f"evaluate/{CLOSED_BOOK_FILE}"}
