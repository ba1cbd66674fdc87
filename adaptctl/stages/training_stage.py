"""What the train and distill stages share: the TrainingSession for a stage's model (its collator, settings,
label loss, the task's own Trainer where it has one), the stage's result from the session's, whether
earlier checkpoints may be resumed, and adaptctl.json beside the trained weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from adaptctl import methods
from adaptctl.core import console, distributed
from adaptctl.methods import get_method
from adaptctl.run.context import StageContext, StageResult
from adaptctl.tasks import get_task
from adaptctl.training import gpu_levers


def training_session(ctx: StageContext, out: Path, model, tokenizer, data, label2id: dict, model_path: Path,
                     **kwargs):
    """The TrainingSession for a stage's model (train, or distill's student); kwargs go to the session."""
    from adaptctl.training.session import TrainingSession

    task, method = get_task(ctx.recipe.task), get_method(ctx.recipe.method.name)
    collator = gpu_levers.collator(ctx.recipe.train, task.collator(tokenizer, ctx.recipe))

    def finish_model(folder: Path):
        if method.finish_save is not None:
            method.finish_save(model, folder)
        _write_model_info(folder, ctx, out.name, model_path, label2id, type(model.config).model_type)

    settings = train_settings(ctx, out, label_loss(ctx, data, label2id))
    if task.trainer is not None:  # another library's Trainer (preference: TRL's), with its own arguments
        from dataclasses import replace

        plan = task.trainer(ctx.recipe, model)
        settings = replace(settings, arguments_class=plan.arguments_class, extra_arguments=plan.arguments)
        kwargs = {"trainer_class": plan.trainer_class, "keep_columns": plan.columns, **kwargs}
    # the columns the task's collator reads besides the model inputs (masked-lm: word offsets)
    kwargs["keep_columns"] = tuple(kwargs.get("keep_columns", ())) + task.collator_columns
    return TrainingSession(model, tokenizer, data, collator, settings, out, finish_model=finish_model,
                           callbacks=ctx.callbacks, **kwargs)


def train_settings(ctx: StageContext, out: Path, loss=None):
    from adaptctl.training.session import TrainSettings

    recipe, task = ctx.recipe, get_task(ctx.recipe.task)
    console.info(f"{out.name}: learning rate {methods.learning_rate(recipe):g} ({methods.learning_rate_source(recipe)})")
    return TrainSettings(train=recipe.train, seed=recipe.seed, learning_rate=methods.learning_rate(recipe),
                         eval_batch_size=recipe.evaluate.batch_size, label_names=task.label_names,
                         per_example_loss=task.per_example_loss, response_only_logits=task.response_only_logits,
                         may_resume=lambda: _resumable(ctx, out), title=f"{recipe.method.name} on {recipe.model.base}",
                         label_loss=loss, optimizer=methods.get_method(recipe.method.name).optimizer(recipe.method))


def label_loss(ctx: StageContext, data, label2id: dict):
    """The LabelLoss of train.class_weights and train.label_smoothing (None: the model's own loss)."""
    settings = ctx.recipe.train
    if settings.class_weights is None and not settings.label_smoothing:
        return None
    from adaptctl.training.label_loss import LabelLoss, inverse_frequency

    weights = None
    if settings.class_weights == "auto":
        weights = inverse_frequency(data["train"]["labels"], len(label2id))
    elif settings.class_weights:
        weights = named_weights(ctx, settings.class_weights, label2id)
    if weights is not None:
        shown = ", ".join(f"{name} {w:g}" for name, w in zip(sorted(label2id, key=label2id.__getitem__), weights))
        console.info(f"train.class_weights: {shown}")
    return LabelLoss(weights, settings.label_smoothing)


def named_weights(ctx: StageContext, asked: dict, label2id: dict) -> tuple[float, ...]:
    """train.class_weights {label: weight} in label-id order (unnamed labels 1).  Which labels exist is known
    only once the data is read, so a name that is no label is refused here, at its recipe line."""
    import difflib

    from adaptctl.core.errors import UserError

    for name in asked:
        if name not in label2id:
            guess = difflib.get_close_matches(name, list(label2id), n=1)
            raise UserError(f"{ctx.where(('train', 'class_weights', name))}: {name!r} is not a label of the data",
                            hint=(f"did you mean {guess[0]!r}? " if guess else "") + f"the labels are: {', '.join(label2id)}")
    return tuple(float(asked.get(name, 1.0)) for name in sorted(label2id, key=label2id.__getitem__))


def stage_result(ctx: StageContext, out: Path, session) -> StageResult:
    """Trains, and turns the session's result into the stage's outputs and manifest fields."""
    if adapted := methods.adapted_modules(session.model):
        full = f"; trained in full: {', '.join(adapted['modules_to_save'])}" if adapted["modules_to_save"] else ""
        console.info(f"{out.name}: adapters on {adapted['wrapped_modules']} modules "
                     f"({', '.join(adapted['target_modules'])}){full}")
    result = session.train_and_save()
    manifest = dict(result.figures)
    if adapted:  # the names peft resolved (all-linear, or its per-architecture table), not the recipe's
        manifest["adapted_modules"] = adapted
    stage = out.name
    outputs = {"model": f"{stage}/model", "checkpoints": f"{stage}/checkpoints",
               "metrics": f"{stage}/metrics.jsonl", "loss_plot": f"{stage}/loss.png"}
    return StageResult(outputs=outputs, metrics=result.metrics, manifest=manifest)


def _resumable(ctx: StageContext, out: Path) -> bool:
    """Checkpoints count only if the last attempt stopped early with the same inputs."""
    previous = ctx.previous or {}
    same = previous.get("key") == ctx.key and previous.get("status") in ("running", "interrupted", "failed")
    if not same and distributed.is_main() and (out / "checkpoints").exists():
        shutil.rmtree(out / "checkpoints")  # from a finished run or other inputs: not ours to continue
    distributed.barrier()
    return same


def _write_model_info(folder: Path, ctx: StageContext, stage: str, model_path: Path, label2id: dict,
                      model_type: str | None = None):
    """adaptctl.json beside the trained weights: what evaluate, export and predict read back.  `model_type`:
    the trained model's (an adapter's base is rebuilt as that, e.g. the mean-pooling classifier)."""
    from adaptctl.core.redact import write_text

    recipe = ctx.recipe
    info = {"task": recipe.task, "auto_class": get_task(recipe.task).auto_class,  # a later phase merges by it
            "method": recipe.method.name, "base_model": recipe.model.base,
            "base_model_path": str(model_path), "label2id": label2id, "stage": stage,
            "max_length": recipe.data.max_length, "prompt": recipe.data.prompt,
            "chat_template": recipe.data.chat_template, "messages": recipe.data.messages,
            "conversations": recipe.data.conversations, "roles": recipe.data.roles, "model_type": model_type}
    write_text(folder / "adaptctl.json", json.dumps(info, indent=2))
