"""The student: `distill.student.base` (default model.base), optionally shrunk.

`layers: N` keeps N of the model's L transformer layers, chosen evenly spaced
as round(linspace(0, L - 1, N)) (always the first and, for N >= 2, the last
layer: 6 -> 2 keeps [0, 5], 6 -> 3 keeps [0, 2, 5], 12 -> 6 keeps
[0, 2, 4, 7, 9, 11]).  DistilBERT initialises its student from the teacher's
layers the same way; the kept layers, the embeddings and the head are the
base model's own weights (the very tensors, nothing re-initialised), and the
config's layer count is updated so the saved student reloads as it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adaptctl.core import console
from adaptctl.core.errors import UserError

# Where the layer list sits under `model.base_model`: BERT/RoBERTa/ELECTRA, Llama/Mistral/Qwen,
# GPT-2/GPT-J, DistilBERT, T5-style encoders.
LAYER_PATHS = ("encoder.layer", "layers", "h", "transformer.layer", "block")


def kept_layers(total: int, keep: int) -> list[int]:
    """Indices of the `keep` layers kept out of `total`, evenly spaced (see the module docstring)."""
    return [int(i) for i in np.linspace(0, total - 1, keep).round()]


def layer_list(model):
    """(parent module, attribute name) of the model's ModuleList of transformer layers, or None."""
    import torch

    base = getattr(model, "base_model", model)
    for path in LAYER_PATHS:
        parts = path.split(".")
        node = base
        for part in parts[:-1]:
            node = getattr(node, part, None)
        if node is not None and isinstance(getattr(node, parts[-1], None), torch.nn.ModuleList):
            return node, parts[-1]
    return None


def shrink(model, keep: int, field: str = "distill.student.layers") -> list[int]:
    """Keep `keep` evenly spaced transformer layers of `model` in place; returns their old indices."""
    import torch

    found = layer_list(model)
    if found is None:
        raise UserError(f"{field}: cannot find the transformer layers of {type(model).__name__}",
                        hint=f"remove {field} and name a smaller model as distill.student.base")
    parent, name = found
    layers = getattr(parent, name)
    total = len(layers)
    if keep > total:
        raise UserError(f"{field}: {keep} layers asked for, but the student base model has only {total}",
                        hint=f"choose at most {total} (fewer layers make a smaller, faster student)")
    kept = kept_layers(total, keep)
    setattr(parent, name, torch.nn.ModuleList([layers[i] for i in kept]))
    for new_index, layer in enumerate(getattr(parent, name)):
        for module in layer.modules():  # decoder attention indexes its KV cache by layer_idx
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    _update_config(model.config, kept)
    return kept


def _update_config(config, kept: list[int]):
    config.num_hidden_layers = len(kept)  # attribute_map turns this into n_layer etc. where named so
    for key in ("layer_types",):  # per-layer lists (sliding/full attention) follow the kept layers
        values = getattr(config, key, None)
        if isinstance(values, list):
            setattr(config, key, [values[i] for i in kept])


def matched_teacher_layers(kept: list[int] | None, base_depth: int, teacher_depth: int) -> list[int]:
    """The teacher layer each student layer is matched with by the hidden-state term.

    Student layer j came from layer kept[j] of its base (every layer when nothing was dropped); that base
    layer sits at the same relative depth as teacher layer ceil((kept[j] + 1) * teacher_depth / base_depth) - 1,
    which is kept[j] itself when the student was shrunk from a model as deep as the teacher (DistilBERT's
    initialisation, then PKD's matching of each student layer to "its" teacher layer).
    """
    base = kept if kept is not None else range(base_depth)
    return [-(-(b + 1) * teacher_depth // base_depth) - 1 for b in base]


def teacher_layers_for(student, student_path: Path, kept: list[int] | None, teacher_model, recipe=None) -> list[int]:
    """matched_teacher_layers for these models, after checking their hidden states can be compared."""
    from transformers import AutoConfig

    from adaptctl.models.loading import tokenizer_options

    ours, theirs = student.config.hidden_size, teacher_model.config.hidden_size
    if ours != theirs:
        raise UserError(f"distill.hidden_weight: the student's hidden size is {ours}, the teacher's {theirs}",
                        hint="match hidden states only between models of one width (e.g. a student shrunk from "
                             "the teacher with distill.student.layers), or set distill.hidden_weight: 0")
    # student_path was checked by load_base_model when the student loaded
    base_depth = AutoConfig.from_pretrained(str(student_path), **tokenizer_options(recipe)).num_hidden_layers
    return matched_teacher_layers(kept, base_depth, teacher_model.config.num_hidden_layers)


def build_student(ctx, label2id: dict):
    """The student model (not yet wrapped by the method), its resolved folder and the kept layer indices."""
    from adaptctl.models.loading import load_base_model
    from adaptctl.models.resolve import resolve_model
    from adaptctl.tasks import get_task

    recipe = ctx.recipe
    spec = recipe.distill.student.base or recipe.model.base
    try:
        resolved = resolve_model(spec, base_dir=ctx.recipe_dir)
    except UserError as exc:
        field = "distill.student.base" if recipe.distill.student.base else "model.base"
        raise UserError(f"{field}: {exc.message.split(': ', 1)[-1]}", hint=exc.hint, details=exc.details) from None
    model = load_base_model(get_task(recipe.task), resolved.path, recipe, label2id)
    kept = None
    if recipe.distill.student.layers:
        kept = shrink(model, recipe.distill.student.layers)
        console.info(f"distill: student keeps layers {kept} of {spec}")
    return model, Path(resolved.path), kept
