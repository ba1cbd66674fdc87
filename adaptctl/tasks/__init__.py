"""The task registry: one TaskSpec per task (tasks/spec.py), each in its own module.

Adding a task is a module with a SPEC and a line in TASK_MODULES; the recipe's task names, metric
lists, data fields, model-card tags, export and predict model classes and `adaptctl init` read the specs.
A registration that would shadow another (two names for one module, a SPEC named otherwise than its
line, a data field that another task or the common data section has) is refused when it is read.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    "token-classification": "adaptctl.tasks.token_classification",
}
TASKS = tuple(TASK_MODULES)


def get_task(name: str) -> TaskSpec:
    spec = importlib.import_module(TASK_MODULES[name]).SPEC
    if spec.name != name:  # the registry and the recipe would call one task by two names
        raise ValueError(f"task module {TASK_MODULES[name]} is registered as {name!r} but its SPEC is named "
                         f"{spec.name!r}: register each task once, under its SPEC's name")
    return spec


def all_tasks() -> list[TaskSpec]:
    return [get_task(name) for name in TASKS]


def check_registry(modules: dict[str, str]):
    """Each module registered once (a repeated name in the dict literal is ruff's F601)."""
    seen: dict[str, str] = {}
    for name, module in modules.items():
        if module in seen:
            raise ValueError(f"task module {module} is registered twice, as {seen[module]!r} and {name!r}")
        seen[module] = name


check_registry(TASK_MODULES)


def task_of_architectures(architectures: list[str]) -> str | None:
    """The task whose Auto class maps to one of a config's `architectures` (transformers' own table), for
    `adaptctl predict` on a folder that adaptctl did not write."""
    for spec in all_tasks():
        known = set(spec.model_class()._model_mapping._model_mapping.values())
        if known.intersection(architectures):
            return spec.name
    return None


# ------------------------------------------------------------------ data fields each task owns
def with_task_fields(data_section: Any) -> Any:  # a pydantic model class in, its subclass out
    """The recipe's `data` section: the fields every task may read (`data_section`) and each task's own
    (TaskSpec.data_fields), one flat section as recipes have always written it."""
    from pydantic import create_model

    owner: dict[str, str] = {}
    fields = {}
    for spec in all_tasks():
        for name, declared in spec.data_fields.items():
            if name in data_section.model_fields or name in owner:
                raise ValueError(f"task {spec.name}: data.{name} is already a field of "
                                 f"{'the data section' if name in data_section.model_fields else 'task ' + owner[name]}")
            owner[name], fields[name] = spec.name, declared
    if not fields:
        return data_section
    return create_model(data_section.__name__, __base__=data_section, __module__=data_section.__module__,
                        __doc__=data_section.__doc__, **fields)


def foreign_data_fields(task: str, data: dict) -> list[tuple[tuple, str, str]]:
    """Fields that another task owns, set to something other than their default: read by nothing here."""
    problems = []
    for spec in all_tasks():
        if spec.name == task:
            continue
        for name, (_, info) in spec.data_fields.items():
            if name in data and data[name] != info.get_default(call_default_factory=True):
                problems.append((("data", name), f"data.{name} is for task {spec.name}, and this recipe's task is {task}",
                                 f"remove data.{name}, or set task: {spec.name}"))
    return problems
