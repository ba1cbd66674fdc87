"""What the peft methods share: wrapping the model, what peft wrapped, and peft's own checks of the
recipe's method section (each method's peft config is built by its spec, methods/lora.py and kin)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path

from adaptctl.core.errors import AdaptctlError, UserError
from adaptctl.models.peft_compat import install_prefix_tuning_fix
from adaptctl.core.rundir import atomic_write_json


def peft_method(build_config):
    """A method's `apply`: wrap the model in peft with the config that `build_config(method, task spec,
    tokenizer)` makes from the recipe (a MethodSpec's peft_config)."""
    return lambda model, recipe: apply_peft(model, recipe, build_config)


def apply_peft(model, recipe, build_config):
    from peft import get_peft_model

    install_prefix_tuning_fix()
    config = recipe_peft_config(build_config, recipe.method, recipe.task, tokenizer=str(model.name_or_path))
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


def recipe_peft_config(build_config, method, task: str, tokenizer: str):
    """peft's config object from the recipe alone; building it runs peft's own checks (its __post_init__).
    `tokenizer` only names where prompt-tuning's init_text is tokenized from; nothing is loaded here."""
    from adaptctl.tasks import get_task

    return build_config(method, get_task(task), tokenizer)


def config_problems(recipe, build_config) -> list[tuple[tuple, str, str]]:
    """What peft itself refuses in the method section, found without a model (for `adaptctl validate`).

    Importing peft imports torch and transformers: about 10 s of CPU on a 2-core machine, against about
    1 s for the rest of `adaptctl validate`.  peft's verdict depends only on the builder's arguments, peft's
    version and the code that builds the config, so it is remembered in the cache and peft is imported once
    per method section.  `build_config`: the method spec's peft_config.
    """
    arguments = (build_config, recipe.method, recipe.task, recipe.model.base)
    memo = _verdict_path(*arguments)
    try:
        return [(tuple(field), message, hint) for field, message, hint in json.loads(memo.read_text())]
    except (OSError, ValueError, TypeError):  # none yet, or a damaged one: ask peft again
        pass
    problems = _peft_verdict(*arguments)
    with contextlib.suppress(AdaptctlError, OSError):  # an unwritable cache costs time, not correctness
        atomic_write_json(memo, problems)
    return problems


def _verdict_path(build_config, method, task: str, tokenizer: str) -> Path:
    import inspect
    from importlib.metadata import version

    from adaptctl.core.rundir import cache_dir

    code = [Path(__file__).read_bytes(), Path(inspect.getfile(build_config)).read_bytes()]
    inputs = [version("peft"), *(hashlib.sha256(c).hexdigest() for c in code), method.model_dump(), task, tokenizer]
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "peft-checks" / f"{key}.json"


def _peft_verdict(build_config, method, task: str, tokenizer: str) -> list[tuple[tuple, str, str]]:
    """peft's message is the hint; the field is the first method field it names."""
    try:
        recipe_peft_config(build_config, method, task, tokenizer=tokenizer)
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


def require_cuda_bitsandbytes():
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("method qlora needs a CUDA device and the bitsandbytes package",
                        hint="use method lora on this machine, or install bitsandbytes on a GPU server")
