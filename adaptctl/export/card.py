"""The exported model's card: README.md with Hugging Face metadata."""

from __future__ import annotations

import yaml

from adaptctl.run.freshness import is_fresh, model_stage
from adaptctl.core.rundir import read_json_object, run_lineage, versions
from adaptctl.tasks import get_task


def model_card(ctx, as_adapter: bool, chat_template: str | None = None, difference: dict | None = None) -> str:
    """`chat_template`: what the shipped tokenizer's chat template is (tasks' chat_template hook), if any;
    `difference`: export's `evaluated_difference`, how far this folder is from the model evaluate scored."""
    recipe = ctx.recipe
    # Only the figures of an evaluation of this very model and recipe: never an earlier run's.
    evaluation = read_json_object(ctx.run.stage("evaluate") / "metrics.json") if is_fresh("evaluate", ctx) else {}
    prepare = ctx.run.read_manifest("prepare") or {}
    chain = run_lineage(ctx.run.root)  # this run's recipe hash as of now (its recipe.yaml), not prepare's
    # Hugging Face's base_model is the hub model the chain started from, not an earlier phase's folder
    root = chain[0].get("model") if chain and isinstance(chain[0], dict) and chain[0].get("model") else recipe.model.base
    metadata = {"library_name": "peft" if as_adapter else "transformers", "base_model": root,
                "pipeline_tag": get_task(recipe.task).pipeline_tag, "tags": ["adaptctl", recipe.method.name, recipe.task]}
    method = recipe.method.model_dump(mode="json")
    lines = ["---", yaml.safe_dump(metadata, sort_keys=False).strip(), "---", "",
             f"# {recipe.name}", "", recipe.description or f"{recipe.task} model adapted from `{recipe.model.base}` with adaptctl.", "",
             "## Model", "", f"- Base model: `{recipe.model.base}`", *_decoder(recipe), f"- Task: `{recipe.task}`",
             f"- Method: `{recipe.method.name}` ({', '.join(f'{k}={v}' for k, v in method.items() if k != 'name' and v is not None) or 'no settings'})",
             *_adapted_modules(ctx),
             f"- Weights: {_weights(recipe, as_adapter)}", *_pooling(ctx, as_adapter),
             *(["- ONNX: `model.onnx` (adapters merged, dynamic batch and sequence axes), checked against PyTorch "
                "with onnxruntime; `adaptctl predict --onnx` runs it"] if "onnx" in recipe.export.formats else []),
             *([f"- Chat template: {chat_template}"] if chat_template else []),
             *_gguf_lines(recipe),
             *_distillation(ctx), *lineage_lines(chain), "", "## Data", ""]
    hashes = (prepare.get("inputs") or {}).get("data_hashes", {})
    for name in ("source", "validation", "test"):
        source = getattr(recipe.data, name)
        if source is not None:
            lines += _data_lines(name, source, hashes.get(name, "n/a"))
    lines += (["", "## Evaluation", ""] + _metrics_table(evaluation) + _scored_as(evaluation, difference)
              + _privacy(ctx, evaluation))
    lines += ["", "## Intended use", "",
              f"Inputs like those in the training data above, for {recipe.task}. It inherits the base model's "
              "limitations and biases; check its metrics on your own data before relying on it.", "",
              "## Recipe", "", "```yaml", yaml.safe_dump(recipe.model_dump(mode="json", exclude_none=True), sort_keys=False).strip(), "```",
              "", "## Versions", ""] + [f"- {k}: {v}" for k, v in versions().items()]
    return "\n".join(lines) + "\n"


def _privacy(ctx, evaluation: dict) -> list[str]:
    """The epsilon DP-SGD spent (the training manifest: the card says it even without an evaluation), the PII
    found and the canaries' exposure (the evaluation's)."""
    from adaptctl.report import GUARANTEE, canary_sentence, dp_sentence, pii_sentence

    producer = model_stage(ctx.recipe)
    spent = (ctx.run.read_manifest(producer) or {}).get("privacy") if producer else None
    lines = [dp_sentence(spent), GUARANTEE] if spent else []
    lines += [pii_sentence(evaluation["pii"])] if evaluation.get("pii") else []
    lines += [canary_sentence(evaluation["canaries"])] if evaluation.get("canaries") else []
    return ["", "## Privacy", *(part for line in lines for part in ("", line))] if lines else []


def _gguf_lines(recipe) -> list[str]:
    if "gguf" not in recipe.export.formats:
        return []
    from adaptctl.export.gguf_file import file_name

    files = ", ".join(f"`{file_name(kind)}`" for kind in recipe.export.gguf.types)
    return [f"- GGUF: {files} for llama.cpp (adapters merged; the chat template and special tokens inside), "
            "and `Modelfile` for Ollama: `ollama create NAME -f Modelfile`"]


def lineage_lines(chain: list) -> list[str]:
    """The phases the model went through, where model.base named an earlier run (nothing otherwise)."""
    if len(chain) < 3:
        return []
    return ["", "## Lineage", "", *(f"{i}. {phase_text(entry)}" for i, entry in enumerate(chain, 1))]


def phase_text(entry: dict) -> str:
    if "run" not in entry:
        return f"base model `{entry.get('model')}`"
    stage = f", its {entry['model_stage']}/model" if entry.get("model_stage") else ""
    return (f"run `{entry.get('name')}` ({entry.get('task')}, {entry.get('method')}) in `{entry['run']}`{stage}, "
            f"recipe sha256 `{str(entry.get('recipe_hash'))[:16]}…`")


def _adapted_modules(ctx) -> list[str]:
    """The modules peft wrapped, as the training stage recorded them: the recipe's target_modules may be a
    shorthand (all-linear) or a pattern that says little about what was adapted."""
    producer = model_stage(ctx.recipe)
    adapted = (ctx.run.read_manifest(producer) or {}).get("adapted_modules") if producer else None
    if not adapted:
        return []
    full = f"; trained in full: {', '.join(f'`{m}`' for m in adapted['modules_to_save'])}" if adapted["modules_to_save"] else ""
    return [f"- Adapted modules: {', '.join(f'`{m}`' for m in adapted['target_modules'])} "
            f"({adapted['wrapped_modules']} modules){full}"]


def _pooling(ctx, as_adapter: bool) -> list[str]:
    """A mean-pooling classifier (model.pooling) says what loading it needs: it is no stock transformers class."""
    from adaptctl.models.mean_pooling import MODEL_TYPE

    producer = model_stage(ctx.recipe)
    info = read_json_object(ctx.run.stage(producer) / "model" / "adaptctl.json") if producer else {}
    if info.get("model_type") != MODEL_TYPE:
        return []
    if as_adapter:
        return ["- Head: the mean of the token states (model.pooling), not BERT's [CLS] pooler: load this adapter with "
                "adaptctl (`adaptctl predict`), which rebuilds its base as the mean-pooling classifier; peft's "
                "AutoPeftModelForSequenceClassification would build the [CLS] one and give other outputs"]
    return ["- Head: the mean of the token states (model.pooling), not BERT's [CLS] pooler, in "
            "`BertMeanPoolingForSequenceClassification` (`mean_pooling.py` in this folder, torch and transformers "
            "only): plain Transformers loads it with `AutoModelForSequenceClassification.from_pretrained(folder, "
            "trust_remote_code=True)` (and the tokenizer with the same flag, since it reads the config) and refuses it "
            "without; adaptctl and `model.onnx` need nothing more"]


def _weights(recipe, as_adapter: bool) -> str:
    dtype = recipe.export.dtype
    if as_adapter:
        return f"a peft adapter ({dtype}); load it with peft over the base model"
    rounded = " (rounded from the fp32 trained weights)" if dtype != "fp32" else ""
    return f"merged, safetensors, {dtype}{rounded}"


def _distillation(ctx) -> list[str]:
    """A distilled student says what it was distilled from, and how."""
    manifest = ctx.run.read_manifest("distill") if ctx.recipe.distill else None
    if not manifest:
        return []
    layers = manifest.get("student_layers")
    kept = f", keeping layers {layers} of `{manifest['student_base']}`" if layers else ""
    extras = "".join([f", {manifest['augmented_rows']:,} augmented training rows" if manifest.get("augmented_rows") else "",
                      f", hidden-state weight {manifest['hidden_weight']}" if manifest.get("hidden_weight") else ""])
    if manifest.get("sequence_level"):  # an API teacher: its answers, not its logits
        return [f"- Distilled from the API teacher `{manifest['teacher']}` by sequence-level distillation (trained on "
                f"{manifest['teacher_rows']:,} of its answers and {manifest['gold_rows']:,} gold ones) into "
                f"{manifest['student_parameters']:,} parameters{kept}"]
    return [f"- Distilled from the teacher `{manifest['teacher']}` ({manifest['teacher_parameters']:,} parameters) "
            f"into {manifest['student_parameters']:,} parameters{kept}: {manifest['loss']} at temperature "
            f"{manifest['temperature']}, alpha {manifest['alpha']}{extras}"]


def _metrics_table(evaluation: dict) -> list[str]:
    if not evaluation:
        return ["Not evaluated."]
    base = (evaluation.get("baseline") or {}).get("metrics", {})
    kind = (evaluation.get("baseline") or {}).get("kind")
    column = f" baseline ({kind}) |" if kind else " baseline |"  # majority-class figures are not a base model's
    lines = [f"Split `{evaluation['split']}`, {evaluation['num_examples']} examples.", "",
             "| metric | this model |" + (column if base else ""), "|---|---|" + ("---|" if base else "")]
    for name, value in evaluation["metrics"].items():
        lines.append(f"| {name} | {value:.4f} |" + (f" {base[name]:.4f} |" if name in base else ""))
    return lines + _forgetting_line(evaluation.get("general"))


def _scored_as(evaluation: dict, difference: dict | None) -> list[str]:
    """Which model and precision the figures are of, against this folder's (two paths, two numbers)."""
    if not evaluation or not difference:
        return []
    lines = ["", f"The figures are of the {difference['evaluated_as']}; this folder holds the {difference['exported_as']}. "
                 f"On {difference['examples']} test examples their outputs differ by at most "
                 f"{difference['max_output_difference']:.2e}"
                 + (f" (class probabilities by {difference['max_probability_difference']:.2e})"
                    if "max_probability_difference" in difference else "") + "."]
    warnings = evaluation.get("warnings") or []
    return lines + (["", "Evaluation warnings:", "", *(f"- {w}" for w in warnings)] if warnings else [])


def _forgetting_line(general) -> list[str]:
    """evaluate.general: what adapting cost on general text, as the evaluate report says it."""
    if not isinstance(general, dict) or general.get("change") is None:
        return []
    return ["", f"Forgetting check: perplexity on general text (`{general['source']}`, {general['examples']} texts) "
                f"{general['perplexity']:.4f} against the base's {general['base_perplexity']:.4f} "
                f"({general['change_percent']:+.1f}%)."]


def _decoder(recipe) -> list[str]:
    if recipe.model.decoder is None:
        return []
    return [f"- Decoder: `{recipe.model.decoder}` (an EncoderDecoderModel warm-started with the base model as its "
            "encoder and this as its decoder; the cross-attention was trained from scratch)"]


def _data_lines(name: str, source, hashed) -> list[str]:
    """A data source and its sha256: line-aligned files (source.columns) each with its own."""
    if not source.columns:
        return [f"- {name}: `{source.path}` (sha256 `{str(hashed)[:16]}…`)"]
    hashes = hashed if isinstance(hashed, dict) else {}
    return [f"- {name}, column `{column}`: `{source.path}/{file}` (sha256 `{str(hashes.get(column, 'n/a'))[:16]}…`)"
            for column, file in source.columns.items()]
