"""The user's own columns beside adaptctl's outputs.

predict's output lines and evaluate/predictions.jsonl keep every input field (an `id`, the label the user
already has, any column) under its own name and unchanged; adaptctl's fields (`input`, `prediction`,
`probabilities`, `answer`, ...) follow them.  An output field whose name an input already uses is written
as `adaptctl_<name>` instead, and the log says so: an output never replaces an input.

For evaluate, prepare carries each row's source columns through as one JSON text column (SOURCE_ROW),
beside the slice columns (data/columns.py), so that predictions.jsonl can give them back row for row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from adaptctl.core.errors import UserError

SOURCE_ROW = "source:row"
PREFIX = "adaptctl_"


def source_rows(batch: dict) -> list[str]:
    """Each row of a batch of source columns as JSON text (values JSON cannot hold, such as dates, as text)."""
    columns = [c for c in batch if not c.startswith(("slice:", "source:"))]
    return [json.dumps(dict(zip(columns, values)), ensure_ascii=False, default=str)
            for values in zip(*(batch[c] for c in columns))]


def output_names(input_fields: Iterable, outputs: Iterable[str], where: str = "the input") -> dict[str, str]:
    """Each output field -> the name it is written under: its own, or adaptctl_<name> where an input field
    has that name.  Both taken is refused: an output would have to replace an input."""
    taken = {str(name) for name in input_fields}
    names = {}
    for name in outputs:
        if name not in taken:
            names[name] = name
        elif PREFIX + name not in taken:
            names[name] = PREFIX + name
        else:
            raise UserError(f"{where} has fields named both {name!r} and {PREFIX + name!r}, so the output "
                            f"{name!r} has no free name", hint=f"rename one of those fields in {where}")
    return names


def renamed(names: dict[str, str]) -> list[str]:
    """The outputs written under another name, as 'prediction -> adaptctl_prediction', for the log."""
    return [f"{name} -> {written}" for name, written in names.items() if name != written]


def merged(inputs: dict, outputs: dict, names: dict[str, str]) -> dict:
    """The input fields unchanged, then the outputs under their names."""
    return {**inputs, **{names.get(key, key): value for key, value in outputs.items()}}
