"""distill: train a smaller student on a teacher's soft targets.

Reads top to bottom: the prepared data, the teacher (found, checked against the
data's labels and tokenizer, loaded frozen), the student (shrunk to
distill.student.layers, wrapped by the recipe's method), the augmented copies
of the training rows (distill.augment), the teacher's logits (cached when
asked), then the Trainer with the mixed loss and, with distill.hidden_weight,
the hidden-state term (adaptctl/distill/).
Writes RUN_DIR/distill/{model/, checkpoints/, metrics.jsonl, loss.png}, and
distill/student_base/ when a peft method adapts a shrunk student (the adapter's
base model exists nowhere else).
"""

from __future__ import annotations

from pathlib import Path

from adaptctl.core import console, distributed
from adaptctl.core.errors import UserError
from adaptctl.methods import get_method
from adaptctl.run.context import StageContext, StageResult
from adaptctl.recipe.schema import ApiModel
from adaptctl.tasks import get_task


def inputs(ctx: StageContext) -> dict:
    """The teacher's content hash: `adaptctl run` re-distils when the teacher was re-trained."""
    from adaptctl.distill.teacher import identity, resolve_teacher

    from adaptctl.recipe.schema import ApiModel

    _check_recipe(ctx.recipe)
    assert ctx.recipe.distill is not None  # _check_recipe refused a recipe without one
    if isinstance(ctx.recipe.distill.teacher, ApiModel):  # the recipe names it whole; its answers are cached
        if (ctx.run.read_manifest("distill") or {}).get("status") != "complete":
            _api_caller(ctx).probe()  # before prepare and the student's training, not an hour in
        return {}
    return {"teacher": identity(resolve_teacher(ctx.recipe.distill.teacher, ctx.recipe_dir))}


def _api_caller(ctx: StageContext):
    from adaptctl.api.client import ApiCaller

    teacher = ctx.recipe.distill.teacher if ctx.recipe.distill else None
    assert isinstance(teacher, ApiModel)  # asked only for an API teacher
    return ApiCaller(teacher.api, ctx.run.root, "distill.teacher.api", where=ctx.where)


def run(ctx: StageContext) -> StageResult:
    from transformers import AutoTokenizer, set_seed

    from adaptctl.data.prepared import load_prepared
    from adaptctl.distill import teacher as teachers
    from adaptctl.distill.student import build_student, teacher_layers_for
    from adaptctl.distill.trainer import INDEX, DistillTrainer, SoftTargets
    from adaptctl.models.loading import check_loadable, tokenizer_options
    from adaptctl.stages.training_stage import stage_result, training_session
    from adaptctl.training.hardware import resolve_precision

    from adaptctl.recipe.schema import ApiModel

    recipe, task = ctx.recipe, get_task(ctx.recipe.task)
    _check_recipe(recipe)
    assert recipe.distill is not None  # _check_recipe refused a recipe without one
    if isinstance(recipe.distill.teacher, ApiModel):
        return _from_api_teacher(ctx)
    settings = recipe.distill
    data, label2id, data_model_path = load_prepared(ctx.run, "distill")
    original_rows = len(data["train"])
    check_loadable(data_model_path, recipe)
    tokenizer = AutoTokenizer.from_pretrained(str(data_model_path), **tokenizer_options(recipe))

    # The teacher: found, and checked before any of its files load (config, tokenizer, weights).
    teacher = teachers.resolve_teacher(settings.teacher, ctx.recipe_dir)
    teachers.check_safe(teacher, recipe)
    teacher_labels, permutation = teachers.label_order(teacher, recipe, label2id)

    # The student: seeded so that a fresh head starts the same on every run.
    set_seed(recipe.seed)
    student, student_path, kept = build_student(ctx, label2id)
    student_label = f"the student ({recipe.distill.student.base or recipe.model.base})"
    teachers.check_tokenizers(teacher, tokenizer, student_path, student_label, recipe)

    console.info(f"distill: teacher {teacher.where}")
    teacher_model = teachers.load_teacher(teacher, recipe, teacher_labels)
    assert task.distill_over is not None  # a task that distils says over what (recipe.DISTILL_TASKS)
    teachers.check_output_size(teacher_model, student, task.distill_over)
    teacher_layers = teacher_layers_for(student, student_path, kept, teacher_model, recipe) if settings.hidden_weight else None
    teacher_parameters, student_parameters = teachers.count(teacher_model), teachers.count(student)
    console.info(f"distill: teacher {teacher_parameters:,} parameters -> student {student_parameters:,} "
                 f"({student_parameters / teacher_parameters:.0%})")

    if settings.augment.copies:
        data = _with_augmented_copies(data, tokenizer, settings.augment, recipe.seed)
    data = _with_index(data)
    precision = resolve_precision(recipe.train.precision)
    teacher_model, cache, cache_info = _teacher_source(ctx, teacher, teacher_model, data, tokenizer, permutation,
                                                       precision)

    out = ctx.run.stage("distill")
    model_path = student_path
    method = get_method(recipe.method.name)
    if kept and method.is_peft:
        model_path = _save_student_base(student, tokenizer, out / "student_base")
    student = method.apply(student, recipe)
    soft = SoftTargets(temperature=settings.temperature, alpha=settings.alpha, kind=settings.loss,
                       causal=task.distill_over == "vocabulary", precision=precision, teacher=teacher_model, cache=cache,
                       permutation=permutation, transfer=settings.augment.copies > 0,
                       hidden_weight=settings.hidden_weight, teacher_layers=teacher_layers)
    # the example index travels with the rows (through the collator) to find cached teacher logits
    session = training_session(ctx, out, student, tokenizer, data, label2id, model_path,
                               trainer_class=DistillTrainer, trainer_kwargs={"soft": soft}, keep_columns=(INDEX,))
    result = stage_result(ctx, out, session)
    result.manifest.update({
        "teacher": str(teacher.path), "teacher_parameters": teacher_parameters,
        "student_parameters": student_parameters, "student_base": str(student_path),
        "student_layers": kept, "temperature": settings.temperature, "alpha": settings.alpha,
        "loss": settings.loss, "augmented_rows": len(data["train"]) - original_rows,
        "hidden_weight": settings.hidden_weight, "teacher_layers_matched": teacher_layers, **cache_info,
    })
    if model_path != student_path:
        result.outputs["student_base"] = "distill/student_base"
    return result


def _from_api_teacher(ctx: StageContext) -> StageResult:
    """Sequence-level distillation (distill/sequence.py): the API teacher's answers to the training inputs,
    then the student trained on them as on gold data."""
    from datasets import DatasetDict
    from transformers import AutoTokenizer, set_seed

    from adaptctl.api import asking
    from adaptctl.data.prepared import load_prepared
    from adaptctl.distill.sequence import taught_split
    from adaptctl.distill.student import build_student
    from adaptctl.distill.teacher import count
    from adaptctl.models.loading import check_loadable, tokenizer_options
    from adaptctl.stages.training_stage import stage_result, training_session

    recipe, task = ctx.recipe, get_task(ctx.recipe.task)
    settings = recipe.distill
    assert settings is not None and isinstance(settings.teacher, ApiModel) and task.api_form is not None  # validated
    form = task.api_form(recipe.data)
    assert form is not None  # validate refuses an API teacher where the task has no API form for the data
    data, label2id, data_model_path = load_prepared(ctx.run, "distill")
    check_loadable(data_model_path, recipe)
    tokenizer = AutoTokenizer.from_pretrained(str(data_model_path), **tokenizer_options(recipe))
    caller = _api_caller(ctx)
    console.info(f"distill: API teacher {settings.teacher.api.model} at {settings.teacher.api.base_url} answers "
                 f"{len(data['train'])} training inputs")
    outputs, _ = asking.ask(caller, form, data["train"], recipe, label2id, "distill: API teacher")
    train, figures = taught_split(data["train"], outputs, form.columns[1], settings.alpha, recipe.seed)
    data = DatasetDict({**data, "train": task.tokenize(train, tokenizer, recipe, label2id)})

    set_seed(recipe.seed)
    student, student_path, kept = build_student(ctx, label2id)
    out, method = ctx.run.stage("distill"), get_method(recipe.method.name)
    model_path = _save_student_base(student, tokenizer, out / "student_base") if kept and method.is_peft else student_path
    session = training_session(ctx, out, method.apply(student, recipe), tokenizer, data, label2id, model_path)
    result = stage_result(ctx, out, session)
    api = asking.describe(caller)
    result.manifest.update({"teacher": f"api:{api['model']} at {api['base_url']}", "sequence_level": True,
                            "student_parameters": count(student), "student_base": str(student_path),
                            "student_layers": kept, "alpha": settings.alpha, **figures, "api": {"teacher": api}})
    if model_path != student_path:
        result.outputs["student_base"] = "distill/student_base"
    return result


def _check_recipe(recipe):
    # Which tasks can be distilled is a recipe rule (recipe.DISTILL_TASKS), refused by `adaptctl validate`.
    if recipe.distill is None:
        raise UserError("the recipe has no distill section", hint="add `distill: {teacher: RUN_DIR_OR_MODEL}`")


def _teacher_source(ctx, teacher, teacher_model, data, tokenizer, permutation, precision):
    """Where the loss reads the teacher from: (the live model or None, its logits cache or None, manifest fields)."""
    settings = ctx.recipe.distill
    if settings.cache_teacher and settings.alpha > 0:  # every logit the loss needs is then in the cache
        cache, info = _teacher_cache(ctx, teacher, teacher_model, data, tokenizer, permutation, precision)
        return None, cache, info
    if settings.alpha == 0 and not settings.hidden_weight:
        return None, None, {}  # labels only: the teacher is checked but never run
    return teacher_model, None, {}


def _with_augmented_copies(data, tokenizer, augment, seed: int):
    """The train split followed by its unlabelled noisy copies (distill/augment.py)."""
    from datasets import DatasetDict, concatenate_datasets

    from adaptctl.distill.augment import augmented_rows

    train = data["train"]
    copies = augmented_rows(train, tokenizer, augment, seed)
    train = train.select_columns(copies.column_names)
    console.info(f"distill: {len(copies)} augmented copies of {len(train)} training rows, taught by the teacher alone")
    return DatasetDict({**data, "train": concatenate_datasets([train, copies.cast(train.features)])})


def _with_index(data):
    """A global example index (train first, then validation) that finds cached teacher logits."""
    from datasets import DatasetDict

    start, indexed = 0, {}
    for name, split in data.items():
        if name in ("train", "validation"):
            split = split.add_column("idx", list(range(start, start + len(split))))
            start += len(split)
        indexed[name] = split
    return DatasetDict(indexed)


def _teacher_cache(ctx, teacher, teacher_model, data, tokenizer, permutation, precision):
    from datasets import concatenate_datasets

    from adaptctl.distill import cache as caches
    from adaptctl.distill.teacher import identity
    from adaptctl.distill.trainer import IndexCollator
    from adaptctl.core.rundir import TEACHER_LOGITS

    recipe = ctx.recipe
    rows = concatenate_datasets([data[s] for s in ("train", "validation") if s in data])
    prepare_key = ctx.run.read_manifest("prepare").get("cache_key") or ctx.run.read_manifest("prepare").get("key")
    augment = recipe.distill.augment.model_dump() | {"seed": recipe.seed} if recipe.distill.augment.copies else None
    over = get_task(recipe.task).distill_over
    key = caches.cache_key(identity(teacher), prepare_key, len(rows), over, recipe.distill.top_k, precision,
                           augment)
    folder = ctx.run.stage("prepare") / TEACHER_LOGITS / key
    cache = caches.LogitsCache.open(folder)
    if cache is not None:
        console.info(f"distill: reusing the teacher's logits from {folder}")
        return cache, {"teacher_cache": str(folder), "teacher_cache_hit": True}
    console.info(f"distill: computing the teacher's logits once over {len(rows)} rows into {folder}")
    if distributed.is_main():  # one process computes; the others wait and read it
        collate = IndexCollator(get_task(recipe.task).collator(tokenizer, recipe))
        caches.build(folder, teacher_model, rows, collate, over=over, top_k=recipe.distill.top_k,
                     permutation=permutation, batch_size=recipe.evaluate.batch_size, precision=precision)
    distributed.barrier()
    return caches.LogitsCache.open(folder), {"teacher_cache": str(folder), "teacher_cache_hit": False}


def _save_student_base(student, tokenizer, folder: Path) -> Path:
    """A shrunk student exists only in memory; a peft adapter needs its base on disk to reload."""
    from adaptctl.core.rundir import atomic_dir

    if distributed.is_main():
        with atomic_dir(folder) as tmp:
            student.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
    distributed.barrier()
    return folder
