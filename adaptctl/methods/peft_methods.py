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

    install_prefix_tuning_fix()
    config = peft_config(recipe, model)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise UserError(f"method {recipe.method.name}: {exc}",
                        hint="set method.target_modules to module names of this model (see its named_modules())") from None


def load_adapter(folder, base=None, auto_class: str | None = None, options: dict | None = None):
    """A saved peft adapter: over `base` (a loaded model), or with peft's AutoPeftModel counterpart of the
    transformers Auto class named `auto_class`, which loads the base the adapter records with `options`
    (loading.load_options: no remote code, safetensors only).  Callers check both folders first
    (loading.check_loadable)."""
    import peft

    install_prefix_tuning_fix()  # prefix adapters on encoder models under transformers 5 (see there)
    if base is not None:
        return peft.PeftModel.from_pretrained(base, str(folder))
    options = options if options is not None else {"trust_remote_code": False, "use_safetensors": True}
    return getattr(peft, auto_class.replace("AutoModel", "AutoPeftModel")).from_pretrained(str(folder), **options)


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


# --------------------------------------------------------------- prefix tuning on encoders
def install_prefix_tuning_fix():
    """Let peft's prefix tuning reach encoder models (BERT and kin) under transformers 5.

    peft (0.21) injects the prefix as `past_key_values` and, for classification and QA, first
    looks for a parameter of that name on the model's forward; transformers 5 renamed it
    `cache`, so peft refuses with "Model does not support past key values".  The models
    still take the prefix as `cache` (through the head's **kwargs to the backbone), which is
    all this patch does.  Idempotent; call it before building or loading a prefix adapter.
    """
    from peft import peft_model

    for cls in (peft_model.PeftModelForSequenceClassification, peft_model.PeftModelForQuestionAnswering,
                peft_model.PeftModelForTokenClassification):
        if not getattr(cls._prefix_tuning_forward, "adaptctl_fix", False):
            cls._prefix_tuning_forward = _prefix_forward_via_cache(cls._prefix_tuning_forward)


def _prefix_forward_via_cache(original):
    import functools

    @functools.wraps(original)
    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        backbone = self.base_model.get_submodule(self.transformer_backbone_name)
        if _takes(self.base_model, "past_key_values") or not _takes(backbone, "cache"):
            return original(self, input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                            return_dict=return_dict, **kwargs)
        batch_size = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        # Heads pass return_dict=True to their backbone themselves; passing it again is a TypeError.
        extra = {k: v for k, v in (("output_attentions", output_attentions),
                                   ("output_hidden_states", output_hidden_states)) if v}
        return self.base_model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                               cache=self.get_prompt(batch_size), **extra, **kwargs)

    forward.adaptctl_fix = True
    return forward


def _takes(module, name: str) -> bool:
    import inspect

    return name in inspect.signature(module.forward).parameters
