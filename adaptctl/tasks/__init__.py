"""One module per task: how its rows are tokenized, which model class it
trains, its collator and its evaluation.  Looked up by name, imported lazily.

Each task module provides:
    COLUMNS                          canonical raw columns after mapping
    templates(recipe) -> dict        canonical column -> data.* template
    tokenize(ds, tokenizer, recipe, label2id) -> Dataset   adds model inputs, `num_tokens`, `truncated`
    model_class()                    the transformers Auto class
    collator(tokenizer, recipe)      the batch collator for training
    evaluate(model, tokenizer, ds, recipe, label2id) -> EvalResult   (evaluation/__init__.py)
    predict(model, tokenizer, texts, recipe, info, batch_size) -> list[dict]   (`adaptctl predict`, optional;
        recipe: the run's inference settings, adaptctl/inference_recipe.py)
"""

from __future__ import annotations

import importlib

_MODULES = {
    "classification": "adaptctl.tasks.classification",
    "causal-lm": "adaptctl.tasks.causal_lm",
    "seq2seq": "adaptctl.tasks.seq2seq",
    "extractive-qa": "adaptctl.tasks.extractive_qa",
}


def get_task(name: str):
    from adaptctl.errors import NotBuiltYet

    try:
        return importlib.import_module(_MODULES[name])
    except ModuleNotFoundError as exc:
        if exc.name == _MODULES[name]:
            raise NotBuiltYet(f"task {name} is not built yet", hint="see the project's open issues") from None
        raise


def encoding_stats(encoded, max_length: int) -> dict:
    """Per-row token counts and truncation flags from a fast tokenizer's output."""
    overflow = [bool(e.overflowing) for e in encoded.encodings] if encoded.encodings else None
    lengths = [len(ids) for ids in encoded["input_ids"]]
    if overflow is None:  # slow tokenizer: a row that fills max_length was probably cut
        overflow = [n >= max_length for n in lengths]
    return {"num_tokens": lengths, "truncated": overflow}
