"""What evaluate adds to its figures so that they are not misread (issue 33): how sure each one is (bootstrap
intervals, and the gain over the baseline with its paired interval), what the figures were computed on (the
model's form and precision), and a warning, with its likely causes, when the model learnt nothing."""

from __future__ import annotations

from adaptctl.core import console
from adaptctl.evaluation import diagnosis
from adaptctl.run.context import StageContext
from adaptctl.tasks import get_task


def add_checks(ctx: StageContext, document: dict, main, baselines: dict, facts: diagnosis.TrainingFacts | None):
    """metrics.json's `intervals`, each baseline's `difference` and `warnings` (also said in the log).
    baselines: each document key (baseline, api_baseline) -> its EvalResult or None."""
    from adaptctl.evaluation import significance

    names = list(document["metrics"])
    ours = main.extras.get("per_example") or {}
    document["intervals"] = significance.intervals(ours, names, ctx.recipe.seed)
    found = {}
    for key, result in baselines.items():
        if result is not None and key in document:
            theirs = result.extras.get("per_example") or {}
            found[key] = significance.paired_differences(ours, theirs, names, ctx.recipe.seed)
            document[key]["difference"] = found[key]
    # the warnings read the gain over the base model's baseline, else over the API model's
    key = next((key for key in baselines if key in found), None)
    differences = found.get(key, {}) if key else {}
    collapsed = diagnosis.collapsed_class(ours, main.extras.get("labels") or [])
    kind = (document.get(key) or {}).get("kind") if key else None
    document["warnings"] = diagnosis.warnings(collapsed, differences, kind, document["num_examples"], facts)
    for warning in document["warnings"]:
        console.warn(f"evaluate: {warning}")


def training_facts(ctx: StageContext, data, producer: str | None) -> diagnosis.TrainingFacts | None:
    """The evaluated model's training, from its stage manifest and the recipe (None: nothing was trained)."""
    from adaptctl.data.labels import label_counts

    from adaptctl.methods import learning_rate, learning_rate_source

    if producer is None:
        return None
    recipe, manifest = ctx.recipe, ctx.run.read_manifest(producer) or {}
    shares = {}
    labels_of = get_task(recipe.task).labels_of
    if "train" in data and "label" in data["train"].column_names and labels_of is not None:
        # each row's labels as the task reads them: one for a classifier, one per word for a token classifier
        counts = label_counts(data["train"], labels_of)
        total = sum(counts.values())
        shares = {label: count / total for label, count in counts.items()}
    return diagnosis.TrainingFacts(
        steps=manifest.get("steps"), learning_rate=learning_rate(recipe), learning_rate_from=learning_rate_source(recipe),
        label_shares=shares, class_weights=recipe.train.class_weights is not None)


def scored_as(model, precision: str) -> dict:
    """metrics.json `scored_as`: the form of the model the figures are of and the precision it ran in; export
    measures how far its folder is from that (export manifest `evaluated_difference`)."""
    from adaptctl.training.hardware import resolve_precision

    resolved = resolve_precision(precision)
    form = "adapter over its base model, unmerged" if hasattr(model, "peft_config") else "whole model"
    return {"form": form, "precision": f"{resolved} autocast" if resolved != "fp32" else "fp32"}
