"""The part of a recipe that inference needs: how prepare rendered an input (the data templates,
the chat template, max_length) and how evaluate decoded (evaluate.generation, the precision, the
batch size).

export ships it in the model folder's adaptctl.json (under "inference"), so that `adaptctl predict`
on an exported folder treats its inputs as the run did; on a run directory predict takes it from
the run's recipe.yaml.  It is recipe-shaped (`.data`, `.evaluate.generation`, `.train.precision`),
so the tasks' own encode functions read it as they read a recipe: one definition of how an input
becomes tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adaptctl.recipe.schema import Data

# The data fields that decide how a row becomes the model's input.
DATA_FIELDS = ("text", "prompt", "response", "messages", "conversations", "roles", "chat_template", "max_length",
               "pii")  # predict screens generated text as data.pii says


@dataclass(frozen=True)
class InferenceRecipe:
    task: str
    data: Data          # a recipe.Data (built without a source: predict reads no data files)
    evaluate: Any       # .generation (recipe.Generation), .batch_size and .answer_pattern
    train: Any          # .precision


def shipped(recipe) -> dict:
    """What export writes into adaptctl.json for predict."""
    return {"data": {name: _plain(getattr(recipe.data, name)) for name in DATA_FIELDS},
            "generation": recipe.evaluate.generation.model_dump(mode="json"),
            "batch_size": recipe.evaluate.batch_size, "precision": recipe.train.precision,
            "answer_pattern": recipe.evaluate.answer_pattern}


def _plain(value):
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def from_shipped(task: str, settings: dict, generation_overrides: dict | None = None) -> InferenceRecipe:
    """The recipe view of shipped settings (or of a subset: missing fields take the recipe's defaults),
    with predict's decoding options over the run's."""
    from adaptctl.recipe.schema import Data, Evaluate, Generation, Pii, Train

    fields = {k: v for k, v in (settings.get("data") or {}).items() if k in DATA_FIELDS}
    if isinstance(fields.get("pii"), dict):
        fields["pii"] = Pii.model_validate(fields["pii"])
    data = Data.model_construct(**fields)
    generation = Generation.model_validate({**(settings.get("generation") or {}), **(generation_overrides or {})})
    batch_size = settings.get("batch_size") or Evaluate.model_fields["batch_size"].default
    precision = settings.get("precision") or Train.model_fields["precision"].default
    evaluate = SimpleNamespace(generation=generation, batch_size=batch_size,
                               answer_pattern=settings.get("answer_pattern"))  # what predict's answer is
    return InferenceRecipe(task=task, data=data, evaluate=evaluate, train=SimpleNamespace(precision=precision))


def of_recipe(recipe, generation_overrides: dict | None = None) -> InferenceRecipe:
    return from_shipped(recipe.task, shipped(recipe), generation_overrides)
