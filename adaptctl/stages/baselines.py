"""Baselines: what an adapted model is measured against (`evaluate.baseline`).

- majority     classification: every example gets the train split's most frequent label. The floor a
               classifier must clear; an untrained head can fall below it (0.15 on four emotions where
               the majority class was 0.42).
- zero-shot    the base model prompted, untrained: classification scores each label name by its
               likelihood under the base model as a causal LM (tasks/prompting.py); causal-lm and
               seq2seq generate from the prompt.  `evaluate.few_shot: k` puts k train examples first.
- base-model   the base model with its untrained task head (random for classification and QA):
               kept for extractive-qa, where nothing better exists yet, and for whoever asks.
- api          a model behind an OpenAI-compatible API (`evaluate.baseline: {api: {...}}`, adaptctl/api/),
               asked the recipe's own prompt, zero- or few-shot, its answers read as the task's outputs;
               measured in addition to the baseline its `beside` names (auto unless set), not instead.
- auto         classification: zero-shot when model.base is a causal LM, else majority (base-model for a
               task with a label map but no majority baseline, token-classification);
               causal-lm/seq2seq: zero-shot; extractive-qa: base-model.
"""

from __future__ import annotations

from pathlib import Path

from adaptctl.core.errors import UserError
from adaptctl.models.config import architectures, is_causal_lm

# The kind written to metrics.json and report.md for a resolved choice (prompting kinds carry the shot count).
KINDS = {"majority": "majority-class", "base-model": "base-model"}


def choose(recipe, base_path: Path) -> str | None:
    """The baseline to compute: majority, zero-shot or base-model; None for no baseline.

    recipe.py refused the combinations a recipe can be checked for alone; what needs the base
    model's config (zero-shot classification needs a causal LM) is checked here, before inference.
    """
    from adaptctl.methods import get_method
    from adaptctl.tasks import get_task

    asked, task = recipe.evaluate.baseline_request(), get_task(recipe.task)
    if recipe.evaluate.baseline is None and task.baseline_by_default(recipe.data):
        asked = "auto"
    prompting = not get_method(recipe.method.name).trains
    if asked == "none":  # an API baseline is measured beside this choice (stages/evaluate_base.api_baseline)
        return None
    if task.has_label_map:
        if asked == "auto":  # method prompting is the zero-shot model already: only the majority is left
            if not prompting and task.zero_shot is not None and is_causal_lm(base_path):
                return "zero-shot"
            # a task without a majority baseline (labels per word: it would predict no entity) has its base model's
            return "majority" if task.majority is not None else "base-model"
        if asked == "zero-shot" and not is_causal_lm(base_path):
            field = "evaluate.baseline.beside" if recipe.evaluate.api_baseline() else "evaluate.baseline"
            raise UserError(f"{field}: zero-shot scores label names under a causal language model, and "
                            f"model.base {recipe.model.base} is not one ({architectures(base_path) or 'no architectures'} "
                            "in its config.json)",
                            hint="use evaluate.baseline: majority, or a causal-LM base such as HuggingFaceTB/SmolLM2-135M-Instruct")
        return asked
    if prompting:  # generation by prompting is the base model already
        return None
    if task.generates and not (task.general_text and task.general_text(recipe.data)):
        return "zero-shot"  # the untrained base model generating is zero-shot prompting, whatever it was called
    return "base-model"  # plain text (continued pretraining) is scored, not prompted: the base model as it is


def kind(choice: str, recipe) -> str:
    if choice not in ("zero-shot", "api"):
        return KINDS[choice]
    shots, prefix = recipe.evaluate.few_shot, "api-" if choice == "api" else ""
    return f"{prefix}{shots}-shot-prompting" if shots else f"{prefix}zero-shot-prompting"
