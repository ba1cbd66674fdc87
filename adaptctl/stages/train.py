"""train: fine-tune the base model on the prepared data with the recipe's method.

Reads top to bottom: the prepared data, the base model loaded with the task's model class, the method
applied, then a TrainingSession (training/session.py) on the Transformers Trainer, so checkpoints,
gradient accumulation, schedulers, mixed precision and torchrun/accelerate work as users know them.
Writes RUN_DIR/train/{model/, checkpoints/, metrics.jsonl, loss.png}.
"""

from __future__ import annotations


from adaptctl.core import console, distributed
from adaptctl.methods import get_method
from adaptctl.run.context import StageContext, StageResult
from adaptctl.stages.training_stage import stage_result, training_session
from adaptctl.tasks import get_task
from adaptctl.training import gpu_levers


def inputs(ctx: StageContext) -> dict:
    """What training reads beyond the recipe and the prepared data (reinforcement: the user's reward files),
    by content, so that an edited file makes the trained model stale; a missing one is refused here."""
    return get_task(ctx.recipe.task).training_inputs(ctx.recipe, ctx.recipe_dir, ctx.where)


def run(ctx: StageContext) -> StageResult:
    method = get_method(ctx.recipe.method.name)
    if not method.trains:
        console.info(f"train: method {method.name} trains nothing; `adaptctl evaluate` scores the prompt")
        return StageResult(manifest={"trainable_parameters": 0, "note": f"{method.name}: nothing to train"})
    from transformers import AutoTokenizer, set_seed

    from adaptctl.data.prepared import load_prepared
    from adaptctl.data.vocabulary import tokenizer_path
    from adaptctl.models.loading import load_base_model, tokenizer_options

    recipe, task, out = ctx.recipe, get_task(ctx.recipe.task), ctx.run.stage("train")
    data, label2id, model_path = load_prepared(ctx.run, "train")
    if recipe.train.privacy is not None:
        _check_private_data(ctx, len(data["train"]))
    set_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path(ctx.run.stage("prepare"), model_path)),
                                              **tokenizer_options(recipe))
    options = {**method.load_options(recipe), **gpu_levers.load_options(recipe.train)}
    base = with_added_tokens(ctx, load_base_model(task, model_path, recipe, label2id, options), tokenizer)
    model = method.apply(base, recipe)
    session = training_session(ctx, out, model, tokenizer, data, label2id, model_path)
    return stage_result(ctx, out, session)


def _check_private_data(ctx: StageContext, rows: int):
    """train.privacy's rules that need the prepared data (its rows) or the launch (its processes)."""
    from adaptctl.core.errors import UserError
    from adaptctl.training.privacy import data_problems

    for field, message, hint in data_problems(ctx.recipe.train.privacy, ctx.recipe.train, rows, distributed.world_size())[:1]:
        raise UserError(f"{ctx.where(field)}: {message}", hint=hint)


def with_added_tokens(ctx: StageContext, model, tokenizer):
    """model.add_tokens: the base model's embeddings grown to prepare's extended tokenizer (each new row
    the mean of its word's old pieces); a model that cannot be resized is refused at that field."""
    from adaptctl.data.vocabulary import grow_embeddings, read_added
    from adaptctl.core.errors import UserError

    added = read_added(ctx.run.stage("prepare"))
    if not added:
        return model
    try:
        return grow_embeddings(model, tokenizer, added)
    except ValueError as exc:
        raise UserError(f"{ctx.where(('model', 'add_tokens'))}: {exc}",
                        hint="remove model.add_tokens for this model") from None
