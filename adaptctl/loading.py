"""Load models safely: base models for training, and adapted models (a full
model folder or a peft adapter over its recorded base) for evaluate, export,
distill and predict."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from adaptctl.errors import UserError
from adaptctl.tasks import get_task


def load_base_model(task_name: str, path: Path, recipe, label2id: dict):
    task = get_task(task_name)
    check_loadable(path, recipe)
    kwargs = task.model_kwargs(label2id) if hasattr(task, "model_kwargs") else {}
    try:
        return task.model_class().from_pretrained(str(path), trust_remote_code=recipe.model.trust_remote_code,
                                                  dtype=torch.float32, **kwargs)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise UserError(f"model {recipe.model.base} needs its own code to load",
                            hint="set model.trust_remote_code: true if you trust that code") from None
        raise


def check_loadable(path: Path, recipe):
    """Refuse, before anything loads, a model that would run code from its folder: pickle weights
    (unless model.allow_pickle) or custom model/tokenizer classes (unless model.trust_remote_code)."""
    path = Path(path)
    has_safetensors = any(path.glob("*.safetensors")) or any(path.glob("*.safetensors.index.json"))
    has_pickle = any(path.glob("*.bin")) or any(path.glob("*.pt"))
    if not has_safetensors and has_pickle and not recipe.model.allow_pickle:
        raise UserError(f"model {recipe.model.base} has only pickle weights (.bin), which can run code when loaded",
                        hint="convert it to safetensors, or set model.allow_pickle: true if you trust the file")
    for name in ("config.json", "tokenizer_config.json"):
        if "auto_map" in _json(path / name) and not recipe.model.trust_remote_code:
            raise UserError(f"model {recipe.model.base} needs its own code to load (auto_map in {path / name})",
                            hint="set model.trust_remote_code: true if you trust that code")


def _json(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):  # absent or unreadable: from_pretrained reports it in its own words
        return {}
    return found if isinstance(found, dict) else {}


def read_info(model_dir: Path) -> dict:
    """adaptctl.json beside a trained model: task, method, base model, label map."""
    try:
        return json.loads((Path(model_dir) / "adaptctl.json").read_text())
    except FileNotFoundError:
        return {}


def load_adapted(model_dir: Path, recipe, label2id: dict):
    """A trained model folder: a peft adapter is loaded over its base (not merged)."""
    model_dir = Path(model_dir)
    if not (model_dir / "adapter_config.json").exists():
        return load_base_model(recipe.task, model_dir, recipe, label2id)
    from adaptctl.methods.peft_methods import load_adapter

    info = read_info(model_dir)
    base_path = Path(info.get("base_model_path") or json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"])
    return load_adapter(model_dir, base=load_base_model(recipe.task, base_path, recipe, label2id))
