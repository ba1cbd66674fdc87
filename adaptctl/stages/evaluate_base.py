"""What evaluate measures the adapted model against: the baseline (stages/baselines.py) and, for a
forgetting check (evaluate.general), the base model's perplexity on general text, both on one model.

Which model that is follows evaluate.compare_with when model.base is an earlier run (a chain
base -> domain-adapted run -> task run): `parent` is the run model.base names, `base` the first
model of the chain, read from the lineage that prepare recorded.  The base model is loaded once
and scores both the held-out split and the general text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adaptctl.core import console
from adaptctl.core.errors import UserError
from adaptctl.run.context import StageContext
from adaptctl.tasks import get_task


@dataclass(frozen=True)
class Compared:
    """The model a baseline runs on: its folder, its name for reports, and which end of the chain it is."""
    path: Path
    name: str
    compared_with: str                 # "parent" | "base"
    added: dict                        # added tokens to grow its embeddings by: word -> its old piece ids
    fresh_head: bool = True            # the task's head is new on it (base-model baseline), not its own


def compared_model(ctx: StageContext, base_path: Path) -> Compared:
    """model.base as prepare resolved it (parent), or the chain's first model (base)."""
    from adaptctl.data.vocabulary import read_added

    recipe, own_added = ctx.recipe, read_added(ctx.run.stage("prepare"))
    fresh = get_task(recipe.task).fresh_head
    if recipe.evaluate.compared_with() == "parent":
        return Compared(base_path, _named(recipe), "parent", own_added, fresh(base_path))
    from adaptctl.models.resolve import resolve_model
    from adaptctl.core.rundir import run_lineage

    chain = run_lineage(ctx.run.root)
    first = chain[0].get("model") if chain and isinstance(chain[0], dict) else None
    if not isinstance(first, str) or len(chain) < 3:  # no earlier run: the base is model.base itself
        return Compared(base_path, _named(recipe), "base", own_added, fresh(base_path))
    resolved = resolve_model(first, base_dir=ctx.recipe_dir)
    console.info(f"evaluate: compare_with base: the chain's first model {first} "
                 f"({' -> '.join(str(entry.get('name') or entry.get('model')) for entry in chain)})")
    return Compared(resolved.path, first, "base", _chain_added(chain), fresh(resolved.path))


def _named(recipe) -> str:
    """model.base, and model.decoder where the two make one encoder-decoder."""
    decoder = recipe.model.decoder
    return recipe.model.base if decoder is None else f"{recipe.model.base} (encoder) + {decoder} (decoder)"


def _chain_added(chain: list[dict]) -> dict:
    """Every phase's added tokens in order (model.add_tokens), so that the plain base reads this run's
    tokenizer with each word's embedding where that phase started it: the mean of its old pieces."""
    from adaptctl.data.vocabulary import read_added

    added = {}
    for entry in chain[1:]:
        if isinstance(entry, dict) and entry.get("run"):
            added.update(read_added(Path(entry["run"]) / "prepare"))
    return added


def load_compared(ctx: StageContext, model_task, compared: Compared, tokenizer, label2id: dict):
    """The compared model with the task's model class, its embeddings grown to this run's tokenizer."""
    from adaptctl.data.vocabulary import grow_embeddings
    from adaptctl.evaluation.inference import device
    from adaptctl.models.loading import load_base_model

    model = load_base_model(model_task, compared.path, ctx.recipe, label2id)
    parent = compared.compared_with == "parent"
    field = ("model", "add_tokens") if parent else ("evaluate", "compare_with")
    hint = "remove model.add_tokens for this model" if parent else "use evaluate.compare_with: parent"
    try:
        model = grow_embeddings(model, tokenizer, compared.added) if compared.added else model
    except ValueError as exc:
        raise UserError(f"{ctx.where(field)}: {exc}", hint=hint) from None
    rows = model.get_input_embeddings().weight.shape[0]
    # the plain base under an earlier phase's grown vocabulary, where that phase left no record of its words
    # (a parent's own vocabulary is what this run's data was tokenized with, whatever its size)
    if not parent and rows < len(tokenizer):
        raise UserError(f"{ctx.where(field)}: {compared.name} has {rows} token embeddings and this run's tokenizer "
                        f"{len(tokenizer)} tokens, so it cannot read this run's data", hint=hint)
    return model.to(device()).eval()


def evaluator(recipe, task, data, by_prompting: bool):
    """The evaluate function and the spec of the task whose model class loads the base model.

    By prompting (method prompting, or the zero-shot baseline) the task's zero-shot evaluation runs on
    the base model (classification scores label names by likelihood under a causal LM,
    tasks/prompting.py); it, and tasks whose evaluation prompts too, get the train split for
    `evaluate.few_shot` examples.
    """
    import functools

    evaluate, model_task, shots = task.evaluate, task, task.evaluate_takes_shots
    if by_prompting and task.zero_shot is not None:
        evaluate, model_task, shots = task.zero_shot.evaluate, get_task(task.zero_shot.model_task), True
    if recipe.evaluate.few_shot and shots and "train" in data:
        evaluate = functools.partial(evaluate, train_split=data["train"])
    return evaluate, model_task


def against_base(choice: str | None, ctx: StageContext, data, split, compared: Compared, tokenizer, label2id: dict,
                 general_split=None, general_evaluate=None):
    """(the baseline's EvalResult or None, the compared model's EvalResult on the general text or None)."""
    import torch

    from adaptctl.stages import baselines

    recipe = ctx.recipe
    if choice == "majority":
        console.info("evaluate: majority-class baseline (the train split's most frequent label)")
        majority = get_task(recipe.task).majority  # the task's own: what the most frequent label means for its rows
        assert majority is not None  # choose_baseline offers majority only to a task that has one
        return majority(split, data["train"] if "train" in data else None, recipe, label2id), None
    if choice is None and general_split is None:
        return None, None
    # zero-shot classification scores label names under the base model as a causal LM; generation
    # tasks prompt the base model as it is, and base-model loads it with an untrained head.
    evaluate, model_task = evaluator(recipe, get_task(recipe.task), data, by_prompting=choice == "zero-shot")
    if choice == "base-model":
        torch.manual_seed(recipe.seed)  # the base model's fresh head is the same on every run
    what = f"{baselines.kind(choice, recipe)} baseline" if choice else "general-text comparison"
    console.info(f"evaluate: {what}, base model {compared.name}")
    base = load_compared(ctx, model_task, compared, tokenizer, label2id)
    baseline = evaluate(base, tokenizer, split, recipe, label2id) if choice else None
    general = None
    if general_split is not None:
        console.info(f"evaluate: general text, base model ({len(general_split)} rows)")
        general = general_evaluate(base, tokenizer, general_split, recipe, label2id)
    return baseline, general


def api_caller(ctx: StageContext, settings, field: str):
    """A caller of the endpoint a recipe's api block names (adaptctl/api/), caching under this run."""
    from adaptctl.api.client import ApiCaller

    return ApiCaller(settings, ctx.run.root, field, where=ctx.where)


def api_baseline(ctx: StageContext, data, split, label2id: dict):
    """The API model on the split with the recipe's prompt (and evaluate.few_shot train examples), or None
    where evaluate.baseline names no API model; measured in addition to the base model's baseline."""
    from adaptctl.api import asking

    recipe = ctx.recipe
    asked = recipe.evaluate.api_baseline()
    if asked is None:
        return None
    settings = asked.api
    console.info(f"evaluate: API baseline {settings.model} at {settings.base_url} on {len(split)} examples")
    caller = api_caller(ctx, settings, "evaluate.baseline.api")
    form_of = get_task(recipe.task).api_form
    assert form_of is not None  # validate refuses an API model for a task without an API form
    form = form_of(recipe.data)
    return asking.evaluate(caller, form, split, recipe, label2id, data["train"] if "train" in data else None,
                           what="evaluate: API baseline")
