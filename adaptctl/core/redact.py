"""Secrets from the environment never reach a log line or a file the run writes.

The values of the variables a recipe lists under `secrets:`, and of well-known token variables,
are replaced by `[NAME redacted]` in every console line (console.py), in every text file
adaptctl writes (rundir.atomic_write_text, write_text below), in what `--json` and predict print,
and (with a same-length mask, so that character offsets such as extractive-QA answer starts stay
right) in the prepared data, so a secret pasted into a data file is neither stored nor trained on.
Values are read from the environment at each use: a variable set later is still covered.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# Tokens that libraries adaptctl drives (huggingface_hub, wandb, mlflow, cloud SDKs) read from the environment.
WELL_KNOWN = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "HUGGINGFACE_TOKEN", "HF_API_TOKEN",
              "WANDB_API_KEY", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "COMET_API_KEY",
              "NEPTUNE_API_TOKEN", "CLEARML_API_SECRET_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
              "AZURE_OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GITHUB_TOKEN", "GH_TOKEN")
# Shorter values ("1", "yes", "dev") occur everywhere by chance; replacing them would garble every output.
MIN_LENGTH = 4

_recipe_names: set[str] = set()


def watch(names) -> None:
    """Also redact the variables a recipe names under `secrets:` (for the rest of this process)."""
    _recipe_names.update(str(name) for name in names)


def secret_values() -> list[tuple[str, str]]:
    """(variable, value) of every watched variable that is set, longest value first, so that a secret
    that contains another one is replaced whole."""
    found: dict[str, str] = {}
    for name in (*WELL_KNOWN, *sorted(_recipe_names)):
        value = (os.environ.get(name) or "").strip()
        if len(value) >= MIN_LENGTH:
            found.setdefault(value, name)
    return sorted(((name, value) for value, name in found.items()), key=lambda item: -len(item[1]))


def redact(text: str) -> str:
    for name, value in secret_values():
        for form in _written_forms(value):
            if form in text:
                text = text.replace(form, f"[{name} redacted]")
    return text


def _written_forms(value: str) -> tuple[str, ...]:
    """The value as it is, and as JSON writes it inside a string (a quote or backslash is escaped there)."""
    escaped = json.dumps(value, ensure_ascii=False)[1:-1]
    return (value,) if escaped == value else (value, escaped)


def mask(text: str) -> str:
    """Like redact, but each secret becomes as many `*` as it has characters (data, where offsets count)."""
    for _, value in secret_values():
        if value in text:
            text = text.replace(value, "*" * len(value))
    return text


def fingerprint() -> str | None:
    """A hash of the secret values (None when none is set): prepared data masked for other values
    must not be reused from the cache.  A hash of all of them together, never one value's own."""
    values = sorted(value for _, value in secret_values())
    return hashlib.sha256("\0".join(values).encode()).hexdigest() if values else None


def write_text(path: Path, text: str) -> Path:
    """Path.write_text for files inside a temporary folder that is renamed into place later."""
    path = Path(path)
    path.write_text(redact(text), encoding="utf-8")
    return path
