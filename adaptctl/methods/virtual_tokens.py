"""Prefix tuning and prompt tuning through peft: learned virtual tokens, which cannot be merged into the
weights (export keeps them as an adapter)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adaptctl.methods.peft_methods import peft_method
from adaptctl.methods.spec import MethodSpec
from adaptctl.core.section import Section


class VirtualTokenMethod(Section):
    name: Literal["prefix-tuning", "prompt-tuning"] = Field(description="Learned virtual tokens (prefix: in every layer; prompt: at the input).")
    num_virtual_tokens: int = Field(20, gt=0, description="How many virtual tokens.")
    init_text: str | None = Field(None, description="prompt-tuning: initialise the virtual tokens from this text.")


def prefix_config(method: VirtualTokenMethod, task, tokenizer: str):
    import peft

    return peft.PrefixTuningConfig(task_type=task.peft_task_type, num_virtual_tokens=method.num_virtual_tokens)


def prompt_config(method: VirtualTokenMethod, task, tokenizer: str):
    """`tokenizer` only names where init_text is tokenized from; nothing is loaded here."""
    import peft

    init = {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": method.init_text,
            "tokenizer_name_or_path": tokenizer} if method.init_text else {}
    return peft.PromptTuningConfig(task_type=task.peft_task_type, num_virtual_tokens=method.num_virtual_tokens, **init)


PREFIX = MethodSpec(name="prefix-tuning", config=VirtualTokenMethod, apply=peft_method(prefix_config), default_learning_rate=1e-2,
                    peft_config=prefix_config, mergeable=False, virtual_tokens=True)
PROMPT = MethodSpec(name="prompt-tuning", config=VirtualTokenMethod, apply=peft_method(prompt_config), default_learning_rate=3e-2,
                    peft_config=prompt_config, mergeable=False, virtual_tokens=True)
