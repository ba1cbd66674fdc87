"""LoRA and its variants through peft: `lora`, `dora` (weight-decomposed) and `qlora` (on a 4-bit base,
CUDA only)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from pydantic import Field

from adaptctl.methods.peft_methods import peft_method, require_cuda_bitsandbytes
from adaptctl.methods.spec import MethodSpec
from adaptctl.core.section import Section


class LoraMethod(Section):
    name: Literal["lora", "dora", "qlora"] = Field(description="Low-rank adapters (dora: weight-decomposed; qlora: on a 4-bit base, CUDA only).")
    r: int = Field(8, gt=0, description="Adapter rank.")
    alpha: float = Field(16, gt=0, description="Scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rslora).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        None, description="Module names to adapt; all-linear: every Linear layer but the output and task heads (the task "
                          "head is trained in full); omitted: all-linear for classification (bench/RESULTS-defaults.md), "
                          "else peft's per-architecture defaults (q_proj, v_proj on Llama).")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling.")
    init: Literal["default", "gaussian", "pissa", "olora"] = Field(
        "default", description="How peft initialises the adapters: default (B = 0, A Kaiming), gaussian (A Gaussian), "
                               "pissa (the base weights' principal singular components) or olora (their QR "
                               "decomposition). pissa and olora move those components out of the base weights; the "
                               "saved adapter is converted back to a plain LoRA (of rank 2r) over the unchanged base.")
    loraplus_lr_ratio: float | None = Field(None, ge=1, le=1000, description=(
        "LoRA+ (Hayen et al. 2024): train the B matrices at this many times the learning rate of the A matrices "
        "(peft.optimizers.create_loraplus_optimizer; 16 is the paper's usual choice); omitted: one learning rate."))


# target_modules left unset: these task types' default, else peft's per-architecture table (query and value on
# BERT, q_proj and v_proj on Llama).  Classifiers: query/value barely moved MiniLM in an epoch on SMS spam,
# SST-2 and AG News, every linear layer did (bench/RESULTS-defaults.md).
DEFAULT_TARGETS = {"SEQ_CLS": "all-linear"}


def target_modules(method: LoraMethod, task_type: str):
    return method.target_modules if method.target_modules is not None else DEFAULT_TARGETS.get(task_type)


def lora_config(method: LoraMethod, task, tokenizer: str):
    """target_modules left unset is the task type's default or None, and `all-linear` stays that string: peft
    resolves both to module names only when it wraps the model (its per-architecture table, or every Linear).

    peft's all-linear shorthand leaves out only the output embeddings (lm_head) and, for SEQ_CLS alone,
    `classifier`/`score`; a QA or token-classification head wrapped as LoRA *and* saved in full
    (modules_to_save) would be trained twice over.  So all-linear leaves out the task's head (its spec's
    head_names) and peft trains it in full."""
    import peft

    targets = target_modules(method, task.peft_task_type)
    excludes = list(task.head_names) if targets == "all-linear" and task.head_names else None
    return peft.LoraConfig(task_type=task.peft_task_type, r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout,
                           target_modules=targets, exclude_modules=excludes,
                           use_rslora=method.use_rslora, use_dora=method.name == "dora",
                           init_lora_weights=PEFT_INITS[method.init])


# The recipe's init names -> peft's init_lora_weights.
PEFT_INITS = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}
# These change the base weights when the adapters are made, so an adapter saved as trained would only
# be right over that changed base: peft converts it to a plain LoRA over the original from the initial one.
MUTATES_BASE = ("pissa", "olora")


def _apply(build_config):
    wrap = peft_method(build_config)

    def apply(model, recipe):
        _say_default_targets(recipe)
        model = wrap(model, recipe)
        if recipe.method.init in MUTATES_BASE:
            _keep_initial_adapter(model)
        return model

    return apply


def _say_default_targets(recipe):
    from adaptctl.core import console
    from adaptctl.tasks import get_task

    default = DEFAULT_TARGETS.get(get_task(recipe.task).peft_task_type)
    if recipe.method.target_modules is None and default is not None:
        console.info(f"{recipe.method.name}: method.target_modules unset: {default}, the default for {recipe.task} "
                     "(bench/RESULTS-defaults.md); name modules to choose others")


def _keep_initial_adapter(model):
    """The untrained adapter, which the final save subtracts (peft's path_initial_model_for_weight_conversion);
    kept in a temporary folder for the life of the process."""
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="adaptctl-initial-adapter-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    config = model.peft_config["default"]
    config.init_lora_weights = True  # what the folder is loaded as: the initial weights, not a new decomposition
    model.save_pretrained(folder)
    model.adaptctl_initial_adapter = folder


def finish_save(model, folder):
    """Over what the Trainer saved, an adapter made by pissa/olora is saved again converted, so that it
    loads over the unchanged base model like any LoRA adapter (export merges it there)."""
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    initial = getattr(model, "adaptctl_initial_adapter", None)
    if initial is None:
        return
    weights = Path(folder) / "adapter_model.safetensors"
    trained = load_file(str(weights))
    model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=initial)
    converted = load_file(str(weights))
    # peft's conversion keeps the LoRA matrices only: the task head trained in full (modules_to_save) goes back in
    converted.update({key: value for key, value in trained.items() if "lora_" not in key})
    save_file(converted, str(weights), metadata={"format": "pt"})



def qlora_load_options(recipe) -> dict:
    """QLoRA's base (Dettmers et al. 2023): 4-bit NormalFloat weights with double quantization, computing in
    bf16 (fp16 before Ampere), loaded on this process's GPU.  Checked at train time, not in validate: a
    recipe for a GPU server validates anywhere."""
    import os

    import torch
    from transformers import BitsAndBytesConfig

    require_cuda_bitsandbytes()
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=compute)
    return {"quantization_config": quantization, "dtype": compute,
            "device_map": {"": int(os.environ.get("LOCAL_RANK", 0))}}  # one whole copy per process under torchrun


def _apply_qlora(model, recipe):
    from peft import prepare_model_for_kbit_training

    require_cuda_bitsandbytes()
    # fp32 norms and head, input gradients for checkpointing: what training on a 4-bit base needs
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.train.gradient_checkpointing)
    return _apply(lora_config)(model, recipe)


def optimizer(method: LoraMethod):
    """method.loraplus_lr_ratio: LoRA+'s optimizer, the Trainer's own class (AdamW) and arguments over peft's
    parameter groups (A at the learning rate, B and the biases at ratio x it, weight decay as train.weight_decay);
    None: the Trainer's AdamW as usual."""
    if method.loraplus_lr_ratio is None:
        return None

    def loraplus(model, args):
        from peft.optimizers import create_loraplus_optimizer
        from transformers import Trainer

        optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        kwargs = {key: value for key, value in kwargs.items() if key != "lr"}
        return create_loraplus_optimizer(model, optimizer_class, lr=args.learning_rate,
                                         loraplus_lr_ratio=method.loraplus_lr_ratio,
                                         loraplus_weight_decay=args.weight_decay, **kwargs)

    return loraplus


def _spec(name: str, apply) -> MethodSpec:
    # Adapters train few, freshly initialised weights and want a larger step than full fine-tuning.  A classifier
    # wants larger still: its head starts from nothing, and at 2e-4 MiniLM barely moved in an epoch on SMS spam,
    # SST-2 and AG News where 1e-3 learnt (bench/RESULTS-defaults.md, measured with lora; dora and qlora follow it).
    return MethodSpec(name=name, config=LoraMethod, apply=apply, default_learning_rate=2e-4, peft_config=lora_config,
                      finish_save=finish_save, learning_rate_by_task={"classification": 1e-3}, optimizer=optimizer)


LORA, DORA = _spec("lora", _apply(lora_config)), _spec("dora", _apply(lora_config))
QLORA = replace(_spec("qlora", _apply_qlora), load_options=qlora_load_options)
