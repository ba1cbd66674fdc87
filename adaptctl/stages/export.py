"""export: a self-contained Hugging Face model folder that plain Transformers
loads: adapters merged (unless told otherwise), safetensors only, tokenizer,
real label names, a model card; verified by reloading it in a fresh process
and comparing its outputs with the trained model's.

The folder is built under a temporary name and renamed into place only after
verification, so a failed export never leaves half a folder behind.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from adaptctl.core import console
from adaptctl.core.errors import RunFailed, UserError
from adaptctl.run.freshness import is_fresh, model_stage
from adaptctl.methods import get_method
from adaptctl.run.context import StageContext, StageResult
from adaptctl.core.redact import write_text
from adaptctl.data.tokens import ENCODER_INPUTS
from adaptctl.core.rundir import atomic_dir
from adaptctl.tasks import get_task

VERIFY_EXAMPLES = 8


def run(ctx: StageContext) -> StageResult:
    from adaptctl.export.card import model_card
    from adaptctl.export.verify import reference_outputs
    from adaptctl.data.prepared import load_prepared
    from adaptctl.models.loading import load_adapted

    recipe = ctx.recipe
    producer = model_stage(recipe)
    if producer is None:
        raise UserError("method prompting has no trained model to export", hint="export a run that trained (full, lora, ...)")
    ctx.run.require(producer, "export")
    data, label2id, _ = load_prepared(ctx.run, "export")
    source = ctx.run.stage(producer) / "model"
    model = load_adapted(source, get_task(recipe.task), recipe, label2id).eval()
    as_adapter = _keeps_adapter(recipe, model)
    examples = _examples(data)
    evaluated = _as_evaluated(model, examples, recipe)  # before the merge: the model evaluate scored
    if not as_adapter and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    _warn_if_evaluation_is_stale(ctx)
    temperature = _fitted_temperature(ctx)
    if "onnx" in recipe.export.formats:
        from adaptctl.export.onnx import refuse_too_large

        refuse_too_large(model)
    tokenizer, template = _shipped_tokenizer(source, recipe)
    pre_tokenizer = _gguf_convertible(ctx, model, tokenizer, as_adapter)  # refused before anything is written
    expected = reference_outputs(model, examples)  # the trained fp32 model's: what every dtype is checked against
    difference = _evaluated_difference(evaluated, expected, recipe, as_adapter)
    dtype = recipe.export.dtype
    fp32_formats = {"onnx", "gguf"} & set(recipe.export.formats)
    shipped = _in_dtype(model, dtype, keep_fp32=bool(fp32_formats))
    target = ctx.run.stage("export") / "model"
    checked = {}
    with atomic_dir(target) as tmp:
        _save(shipped, tokenizer, source, tmp, recipe, as_adapter, temperature)
        retrieval = _ship_retrieval(ctx, tmp, data)
        write_text(tmp / "README.md", model_card(ctx, as_adapter, template[1], difference))
        _refuse_pickles(tmp)
        if recipe.export.verify:
            checked = _verify(tmp, examples, expected, recipe, as_adapter)
        # ONNX and GGUF are written from the fp32 model (adapters merged), not `shipped`
        onnx = _write_onnx(model, recipe, examples, expected, tmp, as_adapter) if "onnx" in recipe.export.formats else None
        gguf = _write_gguf(model, tokenizer, recipe, data, examples, expected, tmp, as_adapter, pre_tokenizer) \
            if pre_tokenizer else None
    files = sorted(p.name for p in target.iterdir())
    weights = sum(p.stat().st_size for p in target.glob("*.safetensors"))
    console.info(f"export: {dtype} weights, {weights / 1e6:.1f} MB")
    manifest = {"merged": not as_adapter, "files": files, "verified": recipe.export.verify, "dtype": dtype,
                "weights_bytes": weights, "chat_template": template[1], **checked, "evaluated_difference": difference}
    if retrieval:
        manifest["retrieval"] = retrieval
    outputs = {"model": "export/model"}
    if onnx:
        manifest["onnx"] = onnx
        outputs["onnx"] = onnx["file"]
    if gguf:
        manifest["gguf"] = gguf
        outputs.update({f"gguf_{kind}": f"export/model/{entry['file']}" for kind, entry in gguf["files"].items()})
    return StageResult(outputs=outputs, metrics={}, manifest=manifest)


def _as_evaluated(model, examples: list[dict], recipe) -> tuple[dict, dict]:
    """The outputs of the model as evaluate ran it (the adapter unmerged, under train.precision's autocast) on
    the verify examples, and how that run is described (metrics.json `scored_as`)."""
    from adaptctl.evaluation.inference import autocast
    from adaptctl.export.verify import reference_outputs
    from adaptctl.stages.evaluate_checks import scored_as

    with autocast(recipe.train.precision):
        return reference_outputs(model, examples), scored_as(model, recipe.train.precision)


def _evaluated_difference(evaluated: tuple[dict, dict], expected: dict, recipe, as_adapter: bool) -> dict:
    """How far the exported model's outputs are from the figures' model (issue 33.5: two paths, two numbers):
    export/manifest.json `evaluated_difference` and the model card say it, so neither reads as the other."""
    import torch

    outputs, form = evaluated
    logits = max(((outputs[k] - expected[k]).abs().max().item() for k in expected if k in outputs), default=0.0)
    probabilities = max(((torch.softmax(outputs[k], -1) - torch.softmax(expected[k], -1)).abs().max().item()
                         for k in expected if k in outputs and k.endswith(".logits") and expected[k].dim() == 2),
                        default=None)
    exported = f"{'adapter' if as_adapter else 'merged model'} in {recipe.export.dtype}"
    found = {"evaluated_as": f"{form['form']}, {form['precision']}", "exported_as": exported,
             "examples": len({k.split('.')[0] for k in expected}), "max_output_difference": round(logits, 6)}
    if probabilities is not None:
        found["max_probability_difference"] = round(probabilities, 6)
    cast = "" if recipe.export.dtype == "fp32" else f" before the {recipe.export.dtype} cast"
    console.info(f"export: evaluate scored the {found['evaluated_as']}; this folder's outputs (checked in fp32{cast}) "
                 f"differ from it by up to {logits:.2e}"
                 + (f" (probabilities {probabilities:.2e})" if probabilities is not None else ""))
    return found


def _shipped_tokenizer(source: Path, recipe):
    """The run's tokenizer with the chat template that renders prompts as training did (the task's
    choice), and what that template is, for the card and the manifest."""
    from transformers import AutoTokenizer

    from adaptctl.models.loading import tokenizer_options

    tokenizer = AutoTokenizer.from_pretrained(str(source), **tokenizer_options(recipe))
    choose = get_task(recipe.task).chat_template
    if choose is None:
        return tokenizer, (getattr(tokenizer, "chat_template", None), None)
    template, what = choose(tokenizer, recipe.data)
    tokenizer.chat_template = template
    return tokenizer, (template, what)


def _gguf_convertible(ctx: StageContext, model, tokenizer, as_adapter: bool) -> str | None:
    """export.formats: gguf: llama.cpp's pre-tokenizer name, once the model is known to convert (else exit 1)."""
    if "gguf" not in ctx.recipe.export.formats:
        return None
    from adaptctl.export.gguf_file import check_convertible

    merged = model.get_base_model() if as_adapter else model
    return check_convertible(merged.config.to_dict(), tokenizer, ctx.where(("export", "formats")))


def _write_gguf(model, tokenizer, recipe, data, examples: list[dict], expected: dict, folder: Path, as_adapter: bool,
                pre_tokenizer: str) -> dict:
    """model-TYPE.gguf per export.gguf.types and the Ollama Modelfile, in the folder being built; checked in a
    fresh process when export.verify is on."""
    from adaptctl.export import gguf_check
    from adaptctl.export.gguf_file import file_name, write_gguf

    if as_adapter:  # a GGUF stands alone: it carries the adapter merged, whatever the folder ships
        model = copy.deepcopy(model).merge_and_unload()
    files, info = {}, {}
    for kind in recipe.export.gguf.types:
        files[kind] = file_name(kind)
        write_gguf(model, tokenizer, folder / files[kind], kind, recipe.name, pre_tokenizer)
        size = (folder / files[kind]).stat().st_size
        info[kind] = {"file": files[kind], "bytes": size}
        console.info(f"export: wrote {files[kind]} ({size / 1e6:.1f} MB)")
    modelfile = _write_modelfile(model, tokenizer, recipe, folder, min(files.values(), key=lambda f: (folder / f).stat().st_size))
    if recipe.export.verify:
        split = data["test"] if "test" in data else data["validation"] if "validation" in data else data["train"]
        found = gguf_check.verify(folder, files, model, tokenizer, examples, expected, gguf_check.prompts_of(split))
        for kind, figures in found.items():
            info[kind].update(figures)
            llama = figures["llama_cpp"]
            console.info(f"export: {files[kind]} in transformers: max logit difference {figures['max_logit_difference']:.2e} "
                         f"(allowed {figures['tolerance']:g} x max(1, |logit|)), greedy {figures['transformers']['greedy_identical']}; "
                         + (f"llama.cpp greedy {llama['greedy_identical']}" if llama["checked"] else
                            f"llama.cpp not checked ({llama['why']})"))
    return {"files": info, "pre_tokenizer": pre_tokenizer, "modelfile": modelfile}


def _write_modelfile(model, tokenizer, recipe, folder: Path, gguf_name: str) -> str | None:
    from adaptctl.evaluation.generation import eos_token_ids
    from adaptctl.export.modelfile import chat_parts, modelfile

    parts = chat_parts(tokenizer) if getattr(tokenizer, "chat_template", None) else None
    if parts is None:
        console.warn("export: the chat template does not render messages as prefix + content + suffix, so no "
                     "Ollama Modelfile is written (the GGUF files carry the template for llama.cpp)")
        return None
    stops = [tokenizer.convert_ids_to_tokens(i) for i in eos_token_ids(model, tokenizer)]
    config = model.generation_config
    text = modelfile(gguf_name, parts, stops, recipe.evaluate.generation,
                     {"top_k": getattr(config, "top_k", None), "top_p": getattr(config, "top_p", None)})
    write_text(folder / "Modelfile", text)
    return "export/model/Modelfile"


def _in_dtype(model, dtype: str, keep_fp32: bool):
    """The model to save, its weights cast to export.dtype; a copy when the fp32 one is still needed (ONNX)."""
    if dtype == "fp32":
        return model
    import torch

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    return (copy.deepcopy(model) if keep_fp32 else model).to(torch_dtype)


def _verify(folder: Path, examples: list[dict], expected: dict, recipe, as_adapter: bool) -> dict:
    """The fresh-process reload against the trained fp32 outputs, at the tolerance of the saved dtype."""
    from adaptctl.export.verify import tolerance, verify_in_fresh_process

    allowed = tolerance(recipe.export.dtype)
    difference = verify_in_fresh_process(folder, examples, expected, recipe.task, as_adapter, recipe,
                                         dtype=recipe.export.dtype)
    console.info(f"export: reloaded in a fresh process; max output difference {difference:.2e} "
                 f"(allowed {allowed:g} x max(1, |output|) for {recipe.export.dtype})")
    return {"max_output_difference": difference, "tolerance": allowed}


def _write_onnx(model, recipe, examples: list[dict], expected: dict, folder: Path, as_adapter: bool) -> dict:
    """model.onnx in the folder being built, checked with onnxruntime when export.verify is on."""
    from adaptctl.export.onnx import export_onnx, verify_onnx

    if as_adapter:  # an ONNX graph stands alone: it carries the adapter merged, whatever the folder ships
        model = copy.deepcopy(model).merge_and_unload()
    pad_id = model.config.pad_token_id or 0
    info = export_onnx(model, get_task(recipe.task).output_names, examples, folder, pad_id)
    console.info(f"export: wrote {info['file']} (opset {info['opset']}) in {info['seconds']:.1f} s")
    if recipe.export.verify:
        info.update(verify_onnx(folder / info["file"], examples, expected, pad_id))
        console.info(f"export: onnxruntime in a fresh process on {info['examples']} examples; max logit difference "
                     f"{info['max_abs_diff']:.2e}, labels {'identical' if info['labels_identical'] else 'DIFFER'}")
        if not info["labels_identical"]:
            console.warn("export: onnxruntime's outputs are within tolerance but pick another label or span "
                         "on a near tie; see export/manifest.json onnx")
    return {**info, "file": f"export/model/{info['file']}"}


def _ship_retrieval(ctx: StageContext, folder: Path, data) -> dict:
    """data.retrieval: the passages, index and embedder in the folder (retrieval/shipped.py), checked to find
    what prepare found for the first held-out questions."""
    from adaptctl.retrieval.shipped import ship, verify

    shipped = ship(ctx.run.stage("prepare"), folder)
    if shipped and ctx.recipe.export.verify:
        split = data["test"] if "test" in data else data["validation"] if "validation" in data else data["train"]
        shipped.update(verify(folder, split))
        console.info(f"export: retrieval shipped ({shipped['passages']} passages, {shipped['index']} index, embedder "
                     f"{shipped['embedder']}); it finds prepare's passages for {shipped['verified_questions']} questions")
    return shipped


def _warn_if_evaluation_is_stale(ctx: StageContext):
    if ctx.run.read_manifest("evaluate") is not None and not is_fresh("evaluate", ctx):
        console.warn("export: the evaluate stage on disk is not of this recipe; the model card leaves its "
                     "metrics out (run `adaptctl evaluate RECIPE` first to include them)")


def _keeps_adapter(recipe, model) -> bool:
    if not hasattr(model, "peft_config"):
        return False
    if not get_method(recipe.method.name).mergeable:
        if recipe.export.merge_adapter:
            console.warn(f"export: {recipe.method.name} adds virtual tokens and cannot be merged; exporting the adapter")
        return True
    return not recipe.export.merge_adapter


def _examples(data) -> list[dict]:
    split = data["test"] if "test" in data else data["validation"] if "validation" in data else data["train"]
    columns = [c for c in ENCODER_INPUTS if c in split.column_names]
    return split.select(range(min(VERIFY_EXAMPLES, len(split)))).select_columns(columns).to_list()


def _fitted_temperature(ctx: StageContext) -> float | None:
    """evaluate.calibrate's temperature, from this recipe's evaluate stage (a stale one's is not this model's)."""
    if not ctx.recipe.evaluate.calibrate:
        return None
    document = ctx.run.stage("evaluate") / "metrics.json"
    if not is_fresh("evaluate", ctx) or not document.is_file():
        console.warn("export: evaluate.calibrate is set but this recipe's evaluate stage has not run; the export "
                     "ships no temperature (run `adaptctl evaluate RECIPE` first)")
        return None
    return (json.loads(document.read_text()).get("calibration") or {}).get("temperature")


def _save(model, tokenizer, source: Path, folder: Path, recipe, as_adapter: bool, temperature: float | None = None):
    model.save_pretrained(str(folder), max_shard_size=recipe.export.max_shard_size)
    tokenizer.save_pretrained(str(folder))
    from adaptctl.recipe.inference import shipped

    info = json.loads((source / "adaptctl.json").read_text())
    # predict on this folder alone renders, encodes and decodes inputs as the run did
    info.update({"merged": not as_adapter, "dtype": recipe.export.dtype, "inference": shipped(recipe)})
    if temperature is not None:  # predict divides the logits by it (evaluate.calibrate)
        info["temperature"] = temperature
    write_text(folder / "adaptctl.json", json.dumps(info, indent=2))
    for name in get_task(recipe.task).ships:  # what the task's model needs beside the weights (pooling modules)
        if (source / name).is_dir():
            shutil.copytree(source / name, folder / name)
        elif (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o644)  # some writers create 0600 files; a shipped model is read by others


def _refuse_pickles(folder: Path):
    pickles = [p.name for p in folder.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    if pickles:
        raise RunFailed(f"export wrote pickle files {pickles}; only safetensors are allowed", hint="this is a bug; please report it")
