"""peft methods: LoRA, DoRA, QLoRA, IA3, prefix tuning and prompt tuning."""

from __future__ import annotations

from adaptctl.errors import UserError

PEFT_TASK_TYPES = {
    "classification": "SEQ_CLS",
    "causal-lm": "CAUSAL_LM",
    "seq2seq": "SEQ_2_SEQ_LM",
    "extractive-qa": "QUESTION_ANS",
}


def apply_peft(model, recipe):
    from peft import get_peft_model

    config = peft_config(recipe, model)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise UserError(f"method {recipe.method.name}: {exc}",
                        hint="set method.target_modules to module names of this model (see its named_modules())") from None


def peft_config(recipe, model):
    import peft

    method, task_type = recipe.method, PEFT_TASK_TYPES[recipe.task]
    if method.name in ("lora", "dora", "qlora"):
        if method.name == "qlora":
            _require_cuda_bitsandbytes()
        return peft.LoraConfig(task_type=task_type, r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout,
                               target_modules=method.target_modules, use_rslora=method.use_rslora,
                               use_dora=method.name == "dora")
    if method.name == "ia3":
        return peft.IA3Config(task_type=task_type, target_modules=method.target_modules,
                              feedforward_modules=method.feedforward_modules)
    if method.name == "prefix-tuning":
        return peft.PrefixTuningConfig(task_type=task_type, num_virtual_tokens=method.num_virtual_tokens)
    init = {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": method.init_text,
            "tokenizer_name_or_path": str(model.name_or_path)} if method.init_text else {}
    return peft.PromptTuningConfig(task_type=task_type, num_virtual_tokens=method.num_virtual_tokens, **init)


def _require_cuda_bitsandbytes():
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("method qlora needs a CUDA device and the bitsandbytes package",
                        hint="use method lora on this machine, or install bitsandbytes on a GPU server")
