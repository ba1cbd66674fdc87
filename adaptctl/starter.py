"""`adaptctl init --task T`: a commented starter recipe, its comments taken
from the recipe fields' own help text so the two never drift apart."""

from __future__ import annotations

import difflib
import json

import yaml

from adaptctl.errors import UserError
from adaptctl.recipe import METHOD_CLASSES, TASKS, Recipe

_DATA = {
    "classification": {"source": "data/train.csv", "text": "{text}", "label": "label",
                       "splits": {"validation": 0.1, "test": 0.1, "stratify": True}, "max_length": 128},
    "causal-lm": {"source": "data/train.jsonl", "prompt": "Summarize:\n{dialogue}\nSummary:", "response": " {summary}",
                  "max_length": 512},
    "seq2seq": {"source": "data/train.jsonl", "prompt": "summarize: {document}", "response": "{summary}", "max_length": 512},
    "extractive-qa": {"source": "data/train.json", "question": "question", "context": "context", "answers": "answers",
                      "max_length": 384, "stride": 128},
}
_MODEL = {"causal-lm": "HuggingFaceTB/SmolLM2-135M-Instruct", "seq2seq": "google-t5/t5-small"}


def starter_document(task: str) -> dict:
    if task not in TASKS:
        guess = difflib.get_close_matches(task, TASKS, n=1, cutoff=0.5)
        choices = f"choose from {', '.join(TASKS)}"
        raise UserError(f"--task: unknown task '{task}'", hint=f"did you mean '{guess[0]}'? ({choices})" if guess else choices)
    return {
        "name": f"my-{task}",
        "task": task,
        "seed": 42,
        "model": {"base": _MODEL.get(task, "sentence-transformers/all-MiniLM-L6-v2")},
        "data": _DATA[task],
        "method": {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.05},
        "train": {"epochs": 1, "batch_size": 16, "learning_rate": 2.0e-4, "precision": "auto"},
        "evaluate": {"split": "test", "baseline": "auto"},
        "export": {"merge_adapter": True},
    }


def starter_recipe(task: str) -> str:
    document = starter_document(task)
    lines = [f"# adaptctl recipe for {task}: edit the data paths, then `adaptctl run recipe.yaml`.",
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
    from adaptctl.recipe_loader import _section_class

    return _section_class(info.annotation) if info else None
