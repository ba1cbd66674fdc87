"""Every API answer, kept under the run (RUN_DIR/api_cache/) so that a re-run, or a resume after a kill or
a network failure, repeats no call.

One small JSON file per answer, written atomically the moment the answer arrives: a run killed half-way
keeps every answer it had, and the re-run asks only for the rest.  The key hashes the endpoint, the model
and the whole request body (messages, temperature, max_tokens), never the key used to pay for it.
"""

from __future__ import annotations

import json
from pathlib import Path

from adaptctl.core.rundir import atomic_write_json, json_hash

FOLDER = "api_cache"


def request_key(endpoint: str, model: str, body: dict) -> str:
    """endpoint: the base_url, or the name the recipe gives it (api.cache_as)."""
    return json_hash({"base_url": endpoint.rstrip("/"), "model": model, "body": body})


class CallCache:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            found = json.loads(self._path(key).read_text())
        except (OSError, ValueError):  # absent, or cut short by a kill before the rename: ask again
            return None
        return found if isinstance(found, dict) and "answer" in found else None

    def put(self, key: str, entry: dict) -> None:
        atomic_write_json(self._path(key), entry)

    def count(self) -> int:
        return sum(1 for _ in self.folder.glob("*/*.json")) if self.folder.is_dir() else 0
