"""`adaptctl init --task T`: a commented starter recipe, its comments taken
from the recipe fields' own help text so the two never drift apart."""

from __future__ import annotations

import difflib
import json

import yaml

from adaptctl.core.errors import UserError
from adaptctl.recipe.schema import METHOD_CLASSES, TASKS, Recipe
from adaptctl.tasks import get_task

def starter_document(task: str) -> dict:
    if task not in TASKS:
        guess = difflib.get_close_matches(task, TASKS, n=1, cutoff=0.5)
        choices = f"choose from {', '.join(TASKS)}"
        raise UserError(f"--task: unknown task '{task}'", hint=f"did you mean '{guess[0]}'? ({choices})" if guess else choices)
    starter = get_task(task).starter
    document = {
        "name": f"my-{task}",
        "task": task,
        "seed": 42,
        "model": {"base": starter["model"]},
        "data": starter["data"],
        # a task whose head an adapter would not save names its own method (masked-lm: full)
        "method": starter.get("method", {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.05}),
        "train": {"epochs": 1, "batch_size": 16, "learning_rate": 2.0e-4, "precision": "auto"},
        "evaluate": {"split": "test", "baseline": "auto"},
        "export": {"merge_adapter": True},
    }
    # a task's own sections (reinforcement: rl and its rewards), and what it sets in the common ones
    for section, value in starter.get("sections", {}).items():
        document[section] = {**document.get(section, {}), **value}
    return document


def starter_recipe(task: str) -> str:
    document = starter_document(task)
    lines = [f"# adaptctl recipe for {task} ({get_task(task).summary}).",
             "# Edit the data paths, then `adaptctl run recipe.yaml`.",
             "# Every key is documented in `adaptctl schema`."]
    for section, value in document.items():
        lines.append(_commented(section, value, Recipe, 0))
    return "\n".join(lines) + "\n"


def _commented(key: str, value, model, indent: int) -> str:
    pad = "  " * indent
    info = model.model_fields.get(key) if model else None
    comment = f"  # {info.description}" if info and info.description else ""
    if isinstance(value, dict):
        sub = METHOD_CLASSES[value["name"]] if key == "method" else _section(info)
        body = "\n".join(_commented(k, v, sub, indent + 1) for k, v in value.items())
        return f"{pad}{key}:{comment}\n{body}"
    if isinstance(value, str) and "\n" in value:
        scalar = json.dumps(value)  # a JSON string is a YAML double-quoted scalar: "line\nline" on one line
    else:
        scalar = yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
    return f"{pad}{key}: {scalar}{comment}"


def _section(info):
    from adaptctl.recipe.loader import _section_class

    return _section_class(info.annotation) if info else None
