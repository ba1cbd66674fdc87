"""evaluate: task metrics of the adapted model on a held-out split and, when
asked, of a baseline (stages/baselines.py: the majority class, the base model
prompted zero-shot, or the base model itself) and of a model behind an API
beside it, so every run answers "how much did adaptation gain?".

Writes RUN_DIR/evaluate/{metrics.json, predictions.jsonl, predictions.base.jsonl, predictions.api.jsonl,
report.md, *.png}.
"""

from __future__ import annotations

import json

from adaptctl.core import console
from adaptctl.core.errors import UserError
from adaptctl.evaluation.metrics import selected as _selected
from adaptctl.run.freshness import model_stage
from adaptctl.methods import get_method
from adaptctl.run.context import StageContext, StageResult
from adaptctl.recipe.schema import ApiModel
from adaptctl.core.rundir import atomic_write_json, atomic_write_text
from adaptctl.stages.evaluate_base import against_base, compared_model, evaluator
from adaptctl.stages.evaluate_retrieval import CLOSED_BOOK_FILE, retrieval_figures, retrieves
from adaptctl.stages.evaluate_retrieval import write_outputs as write_retrieval_outputs
from adaptctl.stages.evaluate_checks import add_checks, scored_as, training_facts
from adaptctl.tasks import get_task


def inputs(ctx: StageContext) -> dict:
    """What evaluate reads beyond the recipe and prepare's outputs: nothing to hash.  Called before any
    upstream stage runs, so an explicit zero-shot baseline that cannot be (model.base is no causal LM)
    is refused here, not after training has taken minutes."""
    recipe, zero_shot = ctx.recipe, get_task(ctx.recipe.task).zero_shot
    # only where the prompted model is of another kind than the task's own (a causal LM for classification)
    if recipe.evaluate.baseline_request() == "zero-shot" and zero_shot and zero_shot.model_task != recipe.task:
        from adaptctl.models.resolve import resolve_model
        from adaptctl.stages import baselines

        baselines.choose(recipe, resolve_model(recipe.model.base, base_dir=ctx.recipe_dir).path)
    _probe_endpoints(ctx)
    if recipe.evaluate.general is None:
        return {}
    return {"evaluate.general.source": _general_hash(ctx, recipe.evaluate.general.source)}


def _probe_endpoints(ctx: StageContext):
    """One call to each API endpoint evaluate will ask (baseline, judge), before any upstream stage trains; not
    when evaluate is complete already (a re-run then reads every answer from the cache, endpoint or not)."""
    from adaptctl.stages.evaluate_base import api_caller

    if (ctx.run.read_manifest("evaluate") or {}).get("status") == "complete":
        return
    evaluate, asked = ctx.recipe.evaluate, []
    if (api_model := evaluate.api_baseline()) is not None:
        asked.append((api_model.api, "evaluate.baseline.api"))
    if evaluate.judge is not None:
        asked.append((evaluate.judge.api, "evaluate.judge.api"))
    for settings, field in asked:
        api_caller(ctx, settings, field).probe()


def _general_hash(ctx: StageContext, source) -> str:
    """The content hash of evaluate.general's files (an edited file re-runs evaluate); a missing one is
    refused here, before the stages upstream of evaluate take minutes."""
    from adaptctl.data.readers import source_files
    from adaptctl.core.rundir import file_hash, json_hash

    try:
        files = source_files(source, ctx.recipe_dir)
        return json_hash({str(f): file_hash(f) for f in files}) if files else source.path
    except UserError as err:
        raise UserError(f"{ctx.where(('evaluate', 'general', 'source'))}: {err.message}", hint=err.hint) from None
    except OSError as exc:
        raise UserError(f"{ctx.where(('evaluate', 'general', 'source'))}: cannot read {source.path}: {exc}",
                        hint="check the file's permissions") from None


def run(ctx: StageContext) -> StageResult:
    from transformers import AutoTokenizer

    from adaptctl.data.prepared import load_prepared
    from adaptctl.evaluation import forgetting
    from adaptctl.evaluation.inference import device
    from adaptctl.models.loading import check_loadable, load_adapted, load_base_model, tokenizer_options
    from adaptctl.data.vocabulary import tokenizer_path
    from adaptctl.stages.evaluate_base import api_baseline
    from adaptctl.stages import baselines

    recipe, task = ctx.recipe, get_task(ctx.recipe.task)
    data, label2id, base_path = load_prepared(ctx.run, "evaluate")
    if task.has_label_map:  # before inference, which may take minutes
        from adaptctl.evaluation.metrics import check_positive_label

        check_positive_label(recipe.evaluate.positive_label, sorted(label2id, key=label2id.get))
    evaluate, model_task = evaluator(recipe, task, data, by_prompting=not get_method(recipe.method.name).trains)
    split_name, split = _split(data, recipe)
    producer = model_stage(recipe)
    check_loadable(base_path, recipe)  # before its tokenizer loads, in case the folder changed since prepare
    compared = compared_model(ctx, base_path)
    choice = baselines.choose(recipe, compared.path)  # refused before inference, not after it
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path(ctx.run.stage("prepare"), base_path)),
                                              **tokenizer_options(recipe))
    general = _general_split(ctx, task, tokenizer, label2id) if recipe.evaluate.general else None
    if producer:
        ctx.run.require(producer, "evaluate")
        model = load_adapted(ctx.run.stage(producer) / "model", task, recipe, label2id)
        label = f"{recipe.method.name} ({producer}/model)"
    else:
        model, label = load_base_model(model_task, base_path, recipe, label2id), f"prompting ({recipe.model.base})"
    model = model.to(device()).eval()
    form = scored_as(model, recipe.train.precision)
    calibration = _temperature(ctx, evaluate, model, tokenizer, data, split_name, label2id) if recipe.evaluate.calibrate else {}
    console.info(f"evaluate: {label} on {len(split)} {split_name} examples")
    main = evaluate(model, tokenizer, split, recipe, label2id, **calibration)
    if recipe.evaluate.explain:
        main.extras["attributions"] = _attributions(recipe, task, model, tokenizer, main.predictions, label2id)
    if recipe.evaluate.slices:
        main.extras["slices"] = _slices(ctx, evaluate, model, tokenizer, split, label2id, calibration)
    general_adapted = _score_general(evaluate, model, tokenizer, general, recipe, label2id, "adapted")
    if recipe.evaluate.canaries and producer:
        main.extras["canaries"] = _exposure(ctx, model, tokenizer)
    del model
    teacher = None
    if producer == "distill" and recipe.evaluate.compare_with_teacher:
        teacher = _evaluate_teacher(ctx, evaluate, tokenizer, split, label2id, main)
    baseline, general_base = against_base(choice, ctx, data, split, compared, tokenizer, label2id,
                                          general["split"] if general else None, evaluate)
    kind = baselines.kind(choice, recipe) if choice else None
    api_model = api_baseline(ctx, data, split, label2id)  # in addition to the baseline above, not instead
    if retrieves(recipe):  # recall@k, and the closed-book base model beside the two that read passages
        main.extras["retrieval"] = retrieval_figures(ctx, data, split, main, baseline, kind, compared, tokenizer, label2id)
    if recipe.evaluate.judge is not None and api_model is not None:  # the API model, the stronger competitor
        main.extras["judge"] = _judge(ctx, main, api_model, baselines.kind("api", recipe))
    elif recipe.evaluate.judge is not None and baseline is not None and kind is not None:
        main.extras["judge"] = _judge(ctx, main, baseline, kind)
    if general:
        main.extras["general"] = forgetting.general_document(general, general_adapted, general_base, compared.name)
    checks = {"facts": training_facts(ctx, data, producer), "scored_as": form}
    return _write(ctx, split_name, main, (baseline, api_model), kind, label, teacher, compared, split, checks)


def _general_split(ctx: StageContext, task, tokenizer, label2id: dict) -> dict:
    """evaluate.general's text, tokenized by the task as prepare tokenizes the domain text (windows, blocks)."""
    from datasets import Dataset

    from adaptctl.data.general import read_general_texts

    settings = ctx.recipe.evaluate.general
    assert settings is not None  # called only with evaluate.general set
    texts = read_general_texts(settings, ctx.recipe_dir, ctx.recipe.seed, where=ctx.where)
    split = task.tokenize(Dataset.from_dict({"text": texts}), tokenizer, ctx.recipe, label2id)
    return {"split": split, "texts": len(texts), "source": settings.source.path, "text": settings.text}


def _score_general(evaluate, model, tokenizer, general: dict | None, recipe, label2id: dict, who: str):
    """The model's figures on the general text, by the evaluation that scored the domain split."""
    if general is None:
        return None
    console.info(f"evaluate: general text, {who} model ({general['texts']} texts, {len(general['split'])} rows)")
    return evaluate(model, tokenizer, general["split"], recipe, label2id)


def _temperature(ctx: StageContext, evaluate, model, tokenizer, data, split_name: str, label2id: dict) -> dict:
    """{"temperature": T} fitted on the validation split: fitting on the split that is measured would
    make the calibrated ECE look better than it is, so the test split is never used."""
    from adaptctl.evaluation.calibration import fit_temperature

    if "validation" not in data or len(data["validation"]) == 0:
        raise UserError(f"{ctx.where(('evaluate', 'calibrate'))}: the prepared data has no validation split to fit "
                        "the temperature on", hint="set data.splits.validation above 0 or give data.validation")
    if split_name == "validation":
        console.warn("evaluate: the temperature is fitted on the validation split that is also measured; "
                     "its ECE after calibration is optimistic (evaluate.split: test measures unseen rows)")
    validation = data["validation"]
    console.info(f"evaluate: fitting a temperature on {len(validation)} validation examples")
    fitted = evaluate(model, tokenizer, validation, ctx.recipe, label2id)
    temperature = fit_temperature(fitted.extras["logits"], list(validation["labels"]))
    console.info(f"evaluate: temperature {temperature:.4f}")
    return {"temperature": temperature}


def _attributions(recipe, task, model, tokenizer, predictions: list[dict], label2id: dict) -> list[dict]:
    """Token attributions of the worst and best evaluate.explain examples, towards their predicted class."""
    from adaptctl.report import worst_and_best

    picked = worst_and_best(predictions, recipe.evaluate.explain)
    console.info(f"evaluate: token attributions for {len(picked)} examples")
    rows = [predictions[i] for _, i in picked]
    found = task.explain(model, tokenizer, [r["input"] for r in rows], [label2id[r["prediction"]] for r in rows], recipe)
    return [{"kind": kind, "index": i, "input": row["input"], "reference": row["reference"],
             "prediction": row["prediction"], "score": row["score"], **attribution}
            for (kind, i), row, attribution in zip(picked, rows, found)]


def _slices(ctx: StageContext, evaluate, model, tokenizer, split, label2id: dict, calibration: dict) -> dict:
    """Every metric per value of each evaluate.slices column: the task's own evaluation run on each value's
    rows (one more pass over the split), so a slice's figures are computed exactly as the whole split's."""
    from adaptctl.data.columns import slice_column

    found = {}
    for i, template in enumerate(ctx.recipe.evaluate.slices):
        column = slice_column(template)
        if column not in split.column_names:  # prepared by another adaptctl: prepare's key counts the slices
            raise UserError(f"{ctx.where(('evaluate', 'slices', i))}: the prepared data has no slice column "
                            f"{template!r}", hint="run `adaptctl prepare RECIPE` again")
        values = split[column]
        rows = {}
        for value in sorted(set(values)):
            subset = split.select([j for j, v in enumerate(values) if v == value])
            console.info(f"evaluate: slice {template} = {value} ({len(subset)} examples)")
            result = evaluate(model, tokenizer, subset, ctx.recipe, label2id, **calibration)
            count = len(result.predictions) or len(subset)  # examples, where a task reads one in several windows
            rows[value] = {"count": count, "metrics": _selected(result.metrics, ctx.recipe.evaluate.metrics)}
        found[template] = {"values": rows, "gap": _gaps(rows)}
    return found


def _gaps(rows: dict) -> dict:
    """Each metric's best slice value minus its worst: how unevenly the model serves the slices."""
    names = dict.fromkeys(name for row in rows.values() for name in row["metrics"])
    return {name: round(max(vals) - min(vals), 6) for name in names
            if (vals := [row["metrics"][name] for row in rows.values() if name in row["metrics"]])}


def _evaluate_teacher(ctx: StageContext, evaluate, tokenizer, split, label2id: dict, main) -> dict:
    """The distilled student's teacher on the same split, with both models' sizes: what distillation kept."""
    from adaptctl.distill.teacher import load_for_evaluation, resolve_teacher
    from adaptctl.evaluation.inference import device
    from adaptctl.recipe.schema import ApiModel

    # The teacher this student was distilled from, as the distill manifest recorded it (the recipe's
    # distill.teacher may have changed since).
    distilled = ctx.run.read_manifest("distill") or {}
    assert ctx.recipe.distill is not None  # the model is distill's (freshness.model_stage) only with the section
    if isinstance(ctx.recipe.distill.teacher, ApiModel):
        return _api_teacher(ctx, split, label2id, main, distilled)
    teacher = resolve_teacher(distilled.get("teacher") or ctx.recipe.distill.teacher, ctx.recipe_dir)
    console.info(f"evaluate: teacher {teacher.where} for comparison")
    model = load_for_evaluation(teacher, ctx.recipe, label2id)
    result = evaluate(model.to(device()).eval(), tokenizer, split, ctx.recipe, label2id)
    return {"result": result, "model": teacher.where, "parameters": distilled.get("teacher_parameters"),
            "student_parameters": distilled.get("student_parameters")}


def _api_teacher(ctx: StageContext, split, label2id: dict, main, distilled: dict) -> dict:
    """The API teacher on the split (its answers cached like every call), and how often the student agrees."""
    from adaptctl.api import asking
    from adaptctl.stages.evaluate_base import api_caller

    recipe = ctx.recipe
    assert recipe.distill is not None and isinstance(recipe.distill.teacher, ApiModel)  # the caller checked
    settings = recipe.distill.teacher.api
    form_of = get_task(recipe.task).api_form
    assert form_of is not None  # validate refuses an API teacher for a task without an API form
    console.info(f"evaluate: API teacher {settings.model} for comparison")
    caller = api_caller(ctx, settings, "distill.teacher.api")
    result = asking.evaluate(caller, form_of(recipe.data), split, recipe, label2id,
                             what="evaluate: API teacher")
    same = [ours["prediction"] == theirs["prediction"] for ours, theirs in zip(main.predictions, result.predictions)]
    return {"result": result, "model": f"{settings.model} at {settings.base_url}", "parameters": None,
            "student_parameters": distilled.get("student_parameters"),
            "agreement": round(sum(same) / len(same), 6) if same else None, "api": result.extras["api"]}


def _judge(ctx: StageContext, main, baseline, kind: str) -> dict:
    """evaluate.judge: the API judge compares each adapted answer with the baseline's, in both orders."""
    from adaptctl.api.judge import judge
    from adaptctl.stages.evaluate_base import api_caller

    settings = ctx.recipe.evaluate.judge
    assert settings is not None  # the caller checked
    caller = api_caller(ctx, settings.api, "evaluate.judge.api")
    return judge(caller, settings, main.predictions, baseline.predictions, kind)


def _split(data, recipe):
    name = recipe.evaluate.split
    if name not in data:
        fallback = "validation" if "validation" in data else None
        if fallback is None:
            raise UserError(f"evaluate.split: the prepared data has no {name} split",
                            hint="set data.splits.test above 0, or give data.test")
        console.warn(f"evaluate: no {name} split; using {fallback}")
        name = fallback
    split = data[name]
    if recipe.evaluate.max_examples:
        split = _first_examples(split, recipe.evaluate.max_examples)
    return name, split


def _first_examples(split, limit: int):
    """The rows of the first `limit` examples: an extractive-qa example is every window of its context
    (the rows sharing its example_index), so cutting rows would score it on some windows only."""
    if "example_index" not in split.column_names:
        return split.select(range(limit)) if len(split) > limit else split
    kept = set(list(dict.fromkeys(split["example_index"]))[:limit])
    return split.select([i for i, example in enumerate(split["example_index"]) if example in kept])


def _write(ctx: StageContext, split_name: str, main, baselines: tuple, kind: str | None, label: str,
           teacher: dict | None, compared, split=None, checks: dict | None = None) -> StageResult:
    """baselines: (the base model's or majority baseline, the API model's), either None."""
    from adaptctl.evaluation.plots import confusion_plot, reliability_plot, slice_plot
    from adaptctl.report import evaluation_report
    from adaptctl.stages.baselines import kind as kind_of

    recipe, out = ctx.recipe, ctx.run.stage("evaluate")
    baseline, api_model = baselines
    wanted = recipe.evaluate.metrics
    document = {"task": recipe.task, "split": split_name, "num_examples": len(main.predictions),
                "model": label, "metrics": _selected(main.metrics, wanted),
                "examples_per_second": main.examples_per_second}
    if main.extras.get("generation_tokens_per_second"):
        document["generation_tokens_per_second"] = main.extras["generation_tokens_per_second"]
    if checks:
        document["scored_as"] = checks["scored_as"]
    if baseline is not None:
        document["baseline"] = _baseline_document(kind, baseline, compared, wanted)
    if api_model is not None:
        document["api_baseline"] = _api_baseline_document(kind_of("api", recipe), api_model, wanted)
    add_checks(ctx, document, main, {"baseline": baseline, "api_baseline": api_model}, (checks or {}).get("facts"))
    if teacher is not None:
        document["teacher"] = _teacher_document(document, teacher, wanted)
    if "judge" in main.extras:
        document["judge"] = main.extras["judge"]
    api = _api_calls(document)
    outputs = {"metrics": "evaluate/metrics.json", "predictions": "evaluate/predictions.jsonl",
               "report": "evaluate/report.md"}
    if "confusion_matrix" in main.extras:
        confusion_plot(main.extras["confusion_matrix"], main.extras["labels"], out / "confusion_matrix.png")
        outputs["confusion_matrix"] = "evaluate/confusion_matrix.png"
        document["per_class"] = main.extras["per_class"]
    if "answers" in main.extras:
        document["answers"] = main.extras["answers"]
    if "signatures" in main.extras:  # sacrebleu's: how BLEU and chrF were computed, to compare them elsewhere
        document["signatures"] = main.extras["signatures"]
    if "masking" in main.extras:  # masked-lm: what the perplexities were scored on, the same for the baseline
        document["masking"] = main.extras["masking"]
    if "general" in main.extras:  # the forgetting check: general text, adapted against the compared model
        document["general"] = main.extras["general"]
    if "retrieval" in main.extras:  # data.retrieval: stages/evaluate_retrieval.py
        document.update(main.extras["retrieval"]["document"])
        outputs.update(write_retrieval_outputs(out, main.extras["retrieval"]))
    else:  # an earlier run's closed-book answers would read as this run's
        (out / CLOSED_BOOK_FILE).unlink(missing_ok=True)
    if "attributions" in main.extras:
        atomic_write_text(out / "attributions.jsonl", _jsonl(main.extras["attributions"]))
        outputs["attributions"] = "evaluate/attributions.jsonl"
    else:  # an earlier run's explanations would read as this model's
        (out / "attributions.jsonl").unlink(missing_ok=True)
    if "slices" in main.extras:
        document["slices"] = main.extras["slices"]
        for n, (template, found) in enumerate(document["slices"].items()):
            slice_plot(template, found["values"], out / f"slice_{n}.png")
            outputs[f"slice_plot_{n}"] = f"evaluate/slice_{n}.png"
    if "reliability" in main.extras:
        reliability_plot(main.extras["reliability"], main.extras.get("reliability_before"), out / "reliability.png")
        outputs["reliability_diagram"] = "evaluate/reliability.png"
    if "temperature" in main.extras:
        document["calibration"] = {"temperature": round(main.extras["temperature"], 6), "fitted_on": "validation",
                                   "ece_before": round(main.extras["ece_before"], 6),
                                   "ece_after": round(main.metrics["ece"], 6)}
    document.update(_privacy_document(ctx, main))
    if main.extras.get("positive_label") is not None:
        document["positive_label"] = {"label": main.extras["positive_label"],
                                      "inferred": bool(main.extras.get("positive_label_inferred"))}
    atomic_write_text(out / "predictions.jsonl", _jsonl(_with_source_columns(main.predictions, split)))
    if baseline is not None:
        base_rows = _with_source_columns(baseline.predictions, split, say=False)
        atomic_write_text(out / "predictions.base.jsonl", _jsonl(base_rows))
        outputs["base_predictions"] = "evaluate/predictions.base.jsonl"
    else:  # an earlier run's baseline would sit beside these predictions as if it were theirs
        (out / "predictions.base.jsonl").unlink(missing_ok=True)
    if api_model is not None:
        atomic_write_text(out / API_PREDICTIONS, _jsonl(_with_source_columns(api_model.predictions, split, say=False)))
        outputs["api_predictions"] = f"evaluate/{API_PREDICTIONS}"
    else:
        (out / API_PREDICTIONS).unlink(missing_ok=True)
    report = evaluation_report(document, main, (baseline, api_model), _prompted_as(recipe))
    atomic_write_text(out / "report.md", report)
    atomic_write_json(out / "metrics.json", document)
    _print_summary(document)
    manifest = {"num_examples": document["num_examples"], "split": split_name,
                "examples_per_second": main.examples_per_second}
    return StageResult(outputs=outputs, metrics=document["metrics"], manifest={**manifest, **({"api": api} if api else {})})


API_PREDICTIONS = "predictions.api.jsonl"


def _api_calls(document: dict) -> dict:
    """Each API use's calls (made, cached, failed) and tokens: for the manifest and --json."""
    uses = {"baseline": document.get("api_baseline"), "teacher": document.get("teacher"), "judge": document.get("judge")}
    return {use: found["api"] for use, found in uses.items() if found and "api" in found}


def _with_source_columns(predictions: list[dict], split, say: bool = True) -> list[dict]:
    """predictions.jsonl rows: the data row's own columns first (its `id`, the user's fields), unchanged, then
    evaluate's fields, renamed adaptctl_<name> where the data has a column of that name (data/passthrough.py).
    Only where each prediction is one prepared row (not windows of a long text)."""
    from adaptctl.data.passthrough import SOURCE_ROW, merged, output_names, renamed

    if split is None or SOURCE_ROW not in split.column_names or len(split) != len(predictions):
        return predictions
    sources = [json.loads(text) for text in split[SOURCE_ROW]]
    fields = dict.fromkeys(key for row in predictions for key in row)
    try:
        names = output_names(dict.fromkeys(key for row in sources for key in row), fields, "the data")
    except UserError as err:  # after minutes of inference the figures matter more than the columns
        console.warn(f"evaluate: {err.message}; predictions.jsonl leaves the data's columns out")
        return predictions
    if (moved := renamed(names)) and say:
        console.info(f"evaluate: the data has columns named as evaluate's fields; predictions.jsonl writes "
                     f"{', '.join(moved)}")
    return [merged(source, row, names) for source, row in zip(sources, predictions)]


def _exposure(ctx: StageContext, model, tokenizer) -> dict:
    """The planted canaries' exposure (evaluation/canaries.py), by the trained model."""
    from adaptctl.evaluation import canaries

    path = ctx.run.stage("prepare") / canaries.FILE
    if not path.is_file():
        raise UserError(f"{ctx.where(('evaluate', 'canaries'))}: the prepared data has no {canaries.FILE}",
                        hint="run `adaptctl prepare RECIPE` again")
    console.info(f"evaluate: canary exposure against {canaries.CANDIDATES} random candidates")
    found = canaries.exposure(model, tokenizer, ctx.recipe, get_task(ctx.recipe.task), json.loads(path.read_text()),
                              ctx.recipe.evaluate.batch_size)
    console.info(f"evaluate: canary exposure mean {found['mean_exposure']:.2f} bits, max {found['max_exposure']:.2f} "
                 f"(of {found['max_possible']:.2f})")
    return found


def _privacy_document(ctx: StageContext, main) -> dict:
    """What the run did for privacy, beside the task metrics: the epsilon DP-SGD spent (the model stage's
    manifest), the PII prepare found (its stats.json), and the canaries' exposure (measured here)."""
    found = {}
    producer = model_stage(ctx.recipe)
    if producer and (spent := (ctx.run.read_manifest(producer) or {}).get("privacy")):
        found["privacy"] = spent
    stats = ctx.run.stage("prepare") / "stats.json"
    if stats.is_file() and (pii := json.loads(stats.read_text()).get("pii")):
        found["pii"] = pii
    if "canaries" in main.extras:
        found["canaries"] = main.extras["canaries"]
    return found


def _prompted_as(recipe) -> str:
    zero_shot = get_task(recipe.task).zero_shot
    return zero_shot.words if zero_shot else ""


def _jsonl(predictions: list[dict]) -> str:
    return "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)


def _baseline_document(kind: str | None, baseline, compared, wanted) -> dict:
    """metrics.json `baseline`: its kind, the model it ran (none for the majority class) and which end of a
    chain that is, whether its head was fresh (base-model), and its figures."""
    document = {"kind": kind, "model": None if kind == "majority-class" else compared.name,
                "metrics": _selected(baseline.metrics, wanted), "examples_per_second": baseline.examples_per_second}
    if kind != "majority-class":
        document["compared_with"] = compared.compared_with
    if kind == "base-model":
        document["fresh_head"] = compared.fresh_head
    if "signatures" in baseline.extras:
        document["signatures"] = baseline.extras["signatures"]
    if "answers" in baseline.extras:  # answer_pattern: how many of the baseline's answers it matched
        document["answers"] = baseline.extras["answers"]
    if "majority_label" in baseline.extras:
        document.update(label=baseline.extras["majority_label"], train_share=baseline.extras["train_share"])
    return document


def _api_baseline_document(kind: str, result, wanted) -> dict:
    """metrics.json `api_baseline`: the model behind an API, its endpoint, calls, tokens, latency and cost."""
    api = result.extras["api"]
    document = {"kind": kind, "model": api["model"], "metrics": _selected(result.metrics, wanted),
                "examples_per_second": result.examples_per_second, "api": api}
    if "unparsed" in result.extras:
        document["unparsed"] = result.extras["unparsed"]
    return document


# Lower is better for these; "retained" is then the teacher's value over the student's.
LOWER_IS_BETTER = ("loss", "perplexity")


def _retained(name: str, student: float, teacher: float) -> float:
    return teacher / student if name in LOWER_IS_BETTER else student / teacher


def _teacher_document(document: dict, teacher: dict, wanted) -> dict:
    result, student_metrics = teacher["result"], document["metrics"]
    metrics = _selected(result.metrics, wanted)
    retained = {name: round(100 * _retained(name, student_metrics[name], value), 2)
                for name, value in metrics.items() if student_metrics.get(name) and value}
    ours_speed, their_speed = document.get("examples_per_second"), result.examples_per_second
    extra = {key: teacher[key] for key in ("agreement", "api") if key in teacher}
    return {**extra, "model": teacher["model"], "metrics": metrics, "retained_percent": retained,
            "parameters": teacher["parameters"], "student_parameters": teacher["student_parameters"],
            "examples_per_second": their_speed,
            "speedup": round(ours_speed / their_speed, 2) if ours_speed and their_speed else None}


def _print_summary(document: dict):
    from rich.table import Table

    from adaptctl.report import metric_text

    others = {document[key]["kind"]: document[key]["metrics"] for key in ("baseline", "api_baseline") if key in document}
    if "teacher" in document:
        others["teacher"] = document["teacher"]["metrics"]
    if console.interactive():
        table = Table("metric", "adapted", *others, title=f"evaluate ({document['split']})")
        for name, value in document["metrics"].items():
            table.add_row(name, f"{value:.4f}", *(metric_text(metrics.get(name)) for metrics in others.values()))
        console.stderr.print(table)
    else:
        for name, value in document["metrics"].items():
            beside = "".join(f" ({label} {metrics[name]:.4f})" for label, metrics in others.items() if name in metrics)
            console.info(f"evaluate: {name} = {value:.4f}{beside}")
    if "general" in document:  # said either way: the forgetting check is the point of evaluate.general
        general = document["general"]
        console.info(f"evaluate: general-text perplexity = {metric_text(general['perplexity'])} "
                     f"(base {metric_text(general['base_perplexity'])}, change {metric_text(general.get('change'))})")
