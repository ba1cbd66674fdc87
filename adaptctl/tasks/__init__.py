"""The task registry: one TaskSpec per task (tasks/spec.py), each in its own module.

Adding a task is a module with a SPEC and a line in TASK_MODULES; the recipe's task names, metric
lists, model-card tags, export and predict model classes and `adaptctl init` read the specs.
"""

from __future__ import annotations

import importlib

from adaptctl.tasks.spec import TaskSpec

TASK_MODULES = {
    "classification": "adaptctl.tasks.classification",
    "causal-lm": "adaptctl.tasks.causal_lm",
    "seq2seq": "adaptctl.tasks.seq2seq",
    "extractive-qa": "adaptctl.tasks.extractive_qa",
    "preference": "adaptctl.tasks.preference",
    "masked-lm": "adaptctl.tasks.masked_lm",
    "reinforcement": "adaptctl.tasks.reinforcement",
    "embedding": "adaptctl.tasks.embedding",
}
TASKS = tuple(TASK_MODULES)


def get_task(name: str) -> TaskSpec:
    return importlib.import_module(TASK_MODULES[name]).SPEC


def all_tasks() -> list[TaskSpec]:
    return [get_task(name) for name in TASKS]


def task_of_architectures(architectures: list[str]) -> str | None:
    """The task whose Auto class maps to one of a config's `architectures` (transformers' own table), for
    `adaptctl predict` on a folder that adaptctl did not write."""
    for spec in all_tasks():
        known = set(spec.model_class()._model_mapping._model_mapping.values())
        if known.intersection(architectures):
            return spec.name
    return None
