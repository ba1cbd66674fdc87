"""peft methods: LoRA, DoRA, QLoRA, IA3, prefix tuning and prompt tuning."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path

from adaptctl.errors import AdaptctlError, UserError
from adaptctl.recipe import PEFT_METHODS
from adaptctl.rundir import atomic_write_json

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


def adapted_modules(model) -> dict:
    """What peft actually did to the model, for the train manifest and the model card: the names of the
    modules it wrapped with adapter layers (the last part of each path, e.g. q_proj), how many it wrapped,
    and the modules it trains in full (the task head).  Empty for a model without peft adapter layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    wrapped, full = set(), set()
    count = 0
    for name, module in model.named_modules():
        if isinstance(module, ModulesToSaveWrapper):
            full.add(name.rsplit(".", 1)[-1])
        elif isinstance(module, BaseTunerLayer) and ".modules_to_save." not in name:
            wrapped.add(name.rsplit(".", 1)[-1])
            count += 1
    if not wrapped and not full:
        return {}
    return {"target_modules": sorted(wrapped), "wrapped_modules": count, "modules_to_save": sorted(full)}


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
    """The peft config for a loaded model: the recipe's settings, and what needs the model or the machine."""
    if recipe.method.name == "qlora":
        _require_cuda_bitsandbytes()
    return recipe_peft_config(recipe.method, recipe.task, tokenizer=str(model.name_or_path))


# Task heads that peft trains in full (modules_to_save) but that its all-linear shorthand does not leave
# out by itself: it skips the output embeddings (lm_head) and, for SEQ_CLS only, `classifier`/`score`.
# A QA head wrapped as LoRA *and* saved in full would be trained twice over; leave it to modules_to_save.
ALL_LINEAR_EXCLUDES = {"extractive-qa": ["qa_outputs"]}


def recipe_peft_config(method, task: str, tokenizer: str):
    """peft's config object from the recipe alone; building it runs peft's own checks (its __post_init__).

    target_modules left unset stays None, and `all-linear` stays that string: peft resolves both to module
    names only when it wraps the model (its per-architecture table, or every Linear layer), so checks that
    need those names only run then; adapted_modules() reads back what it wrapped.  `tokenizer` only names
    where prompt-tuning's init_text is tokenized from; nothing is loaded here.
    """
    import peft

    task_type = PEFT_TASK_TYPES[task]
    if method.name in ("lora", "dora", "qlora"):
        all_linear = method.target_modules == "all-linear"
        excludes = ALL_LINEAR_EXCLUDES.get(task) if all_linear else None
        return peft.LoraConfig(task_type=task_type, r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout,
                               target_modules=method.target_modules, exclude_modules=excludes,
                               use_rslora=method.use_rslora, use_dora=method.name == "dora")
    if method.name == "ia3":
        return peft.IA3Config(task_type=task_type, target_modules=method.target_modules,
                              feedforward_modules=method.feedforward_modules)
    if method.name == "prefix-tuning":
        return peft.PrefixTuningConfig(task_type=task_type, num_virtual_tokens=method.num_virtual_tokens)
    init = {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": method.init_text,
            "tokenizer_name_or_path": tokenizer} if method.init_text else {}
    return peft.PromptTuningConfig(task_type=task_type, num_virtual_tokens=method.num_virtual_tokens, **init)


def config_problems(recipe) -> list[tuple[tuple, str, str]]:
    """What peft itself refuses in the method section, found without a model (for `adaptctl validate`).

    Importing peft imports torch and transformers: about 10 s of CPU on a 2-core machine, against about
    1 s for the rest of `adaptctl validate`.  peft's verdict depends only on the builder's arguments, peft's
    version and this module, so it is remembered in the cache and peft is imported once per method section.
    """
    if recipe.method.name not in PEFT_METHODS:
        return []
    arguments = (recipe.method, recipe.task, recipe.model.base)
    memo = _verdict_path(*arguments)
    try:
        return [(tuple(field), message, hint) for field, message, hint in json.loads(memo.read_text())]
    except (OSError, ValueError, TypeError):  # none yet, or a damaged one: ask peft again
        pass
    problems = _peft_verdict(*arguments)
    with contextlib.suppress(AdaptctlError, OSError):  # an unwritable cache costs time, not correctness
        atomic_write_json(memo, problems)
    return problems


def _verdict_path(method, task: str, tokenizer: str) -> Path:
    from importlib.metadata import version

    from adaptctl.models import cache_dir

    inputs = [version("peft"), hashlib.sha256(Path(__file__).read_bytes()).hexdigest(), method.model_dump(), task, tokenizer]
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "peft-checks" / f"{key}.json"


def _peft_verdict(method, task: str, tokenizer: str) -> list[tuple[tuple, str, str]]:
    """peft's message is the hint; the field is the first method field it names."""
    try:
        recipe_peft_config(method, task, tokenizer=tokenizer)
    except ValueError as exc:  # what peft's __post_init__ raises on settings it refuses (a TypeError is our bug)
        field = _method_field_named(str(exc), method)
        return [(("method",) + ((field,) if field else ()), f"peft refuses these {method.name} settings", str(exc))]
    return []


def _method_field_named(message: str, method) -> str | None:
    # peft's arguments are the recipe's field names, some with a prefix (lora_alpha, prompt_tuning_init_text).
    for word in re.findall(r"\w+", message):
        field = word.removeprefix("lora_").removeprefix("prompt_tuning_")
        if field in type(method).model_fields and field != "name":
            return field
    return None


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
