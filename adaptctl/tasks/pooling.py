"""model.pooling for classification: which sequence state the head reads, [CLS] (the checkpoint's pooler)
or the mean of the token states (adaptctl/models/mean_pooling.py), and why it was chosen."""

from __future__ import annotations

import json
from pathlib import Path

from adaptctl.core.errors import UserError

# Where the choice applies: the model types whose classifier mean_pooling.py reimplements.
MEAN_POOLING_TYPES = ("bert",)


def sentence_transformers_mean(path: Path) -> bool:
    """Whether a model folder is a sentence-transformers model trained with mean pooling (its 1_Pooling/config.json)."""
    try:
        config = json.loads((Path(path) / "1_Pooling" / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("pooling_mode_mean_tokens"))


def model_type(path: Path) -> str | None:
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def choose(recipe, path: Path) -> tuple[str, str]:
    """(cls | mean, the reason in a few words) for the base model folder at `path`."""
    from adaptctl.models.mean_pooling import MODEL_TYPE

    asked, kind = recipe.model.pooling, model_type(path)
    if kind == MODEL_TYPE:  # a model trained with mean pooling (a run's, or an export) keeps it
        return "mean", "the model was trained with mean pooling"
    if asked == "mean":
        if kind not in MEAN_POOLING_TYPES:
            raise UserError(f"model.pooling: mean pooling is built for {', '.join(MEAN_POOLING_TYPES)} models, and "
                            f"{recipe.model.base} is a {kind or 'model of unknown type'}",
                            hint="set model.pooling: cls (or auto)")
        return "mean", "model.pooling: mean"
    if asked == "cls":
        return "cls", "model.pooling: cls"
    if kind in MEAN_POOLING_TYPES and sentence_transformers_mean(path):
        return "mean", "the base is a sentence-transformers model trained for mean pooling (1_Pooling/config.json)"
    return "cls", "the base is no sentence-transformers mean-pooling model"


def model_class(recipe, path: Path):
    """The class to load the base with: the mean-pooling classifier, or None for the task's Auto class."""
    from adaptctl.core import console

    choice, why = choose(recipe, path)
    if choice == "cls":
        return None
    from adaptctl.models.mean_pooling import BertMeanPoolingForSequenceClassification, register

    register()
    console.info(f"classification: the head reads the mean of the token states ({why}); model.pooling: cls "
                 "reads the [CLS] pooler instead")
    return BertMeanPoolingForSequenceClassification


def register():
    """The mean-pooling classifier's model type, known to transformers' Auto classes (lazily: it imports torch)."""
    from adaptctl.models.mean_pooling import register as register_mean_pooling

    register_mean_pooling()
