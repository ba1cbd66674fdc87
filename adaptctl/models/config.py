"""What a model folder's config.json says, read without loading the model (no torch, no transformers)."""

from __future__ import annotations

import json
from pathlib import Path


def is_causal_lm(path: Path) -> bool:
    """Whether a model folder was saved as a decoder-only language model (config.json `architectures`).

    The architectures, not the model type: transformers maps `bert` to a causal-LM class too, but a
    BERT checkpoint was trained to fill masks, and its next-token likelihoods mean nothing.
    """
    config = model_config(path)
    if config.get("is_encoder_decoder"):
        return False
    return any(name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures(path))


def architectures(path: Path) -> list[str]:
    names = model_config(path).get("architectures") or []
    return [str(name) for name in names] if isinstance(names, list) else []


def model_config(path: Path) -> dict:
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):  # no readable config: not a model that can be prompted
        return {}
    return config if isinstance(config, dict) else {}
