"""predict's input rows (--input: a .jsonl, .csv or .txt file, or - for stdin), read a chunk at a time.

The file is read as the rows are needed, never whole, so that predicting over millions of rows holds one chunk
in memory; predict reads it twice (every row checked before the model loads, then predicted), so standard
input is first copied to a temporary file.  Each row carries the line it came from under "__line__", for
messages.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from adaptctl.core.errors import UserError
from adaptctl.data.limits import json_loads

LINE = "__line__"


@contextmanager
def input_file(source: str) -> Iterator[tuple[Path, str]]:
    """The input as a file that can be read again, and its name for messages ("stdin" for -)."""
    from adaptctl.data.readers import cannot_read

    if source != "-":
        path = Path(source)
        if not path.is_file():
            raise UserError(f"--input: no file at {path}", hint="a .jsonl, .csv or .txt file, or - for stdin")
        try:
            path.open("rb").close()
        except OSError as exc:
            raise cannot_read(path, exc) from None
        yield path, path.name
        return
    with tempfile.TemporaryDirectory(prefix="adaptctl-stdin-") as folder:
        path = Path(folder) / "stdin"
        with path.open("wb") as copy:
            stdin = getattr(sys.stdin, "buffer", None)
            if stdin is None:  # a text stream with no bytes under it (a test's stand-in): already decoded
                copy.write(sys.stdin.read().encode("utf-8"))
            else:
                shutil.copyfileobj(stdin, copy)
        yield path, "stdin"


def chunks(path: Path, name: str, column: str | None, size: int) -> Iterator[list[dict]]:
    """The rows, `size` at a time."""
    with path.open("rb") as handle:
        rows = csv_rows(handle, path, name) if name.endswith(".csv") else line_rows(handle, name, column)
        chunk: list[dict] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def line_rows(handle: IO[bytes], name: str, column: str | None) -> Iterator[dict]:
    """A JSON object a line (.jsonl, or stdin whose lines start with "{"), else a line of text a row."""
    for number, raw in enumerate(handle, 1):
        line = decoded(raw, name, number).rstrip("\r\n")
        if not line.strip():
            continue
        if name.endswith(".jsonl") or (name == "stdin" and line.lstrip().startswith("{")):
            yield {**json_row(line, name, number), LINE: number}
        else:
            yield {column or "text": line, LINE: number}


def json_row(line: str, name: str, number: int) -> dict:
    try:
        row = json_loads(line)  # a line nested thousands deep is bad JSON too, not a RecursionError
    except json.JSONDecodeError as exc:
        raise UserError(f"{name}:{number}: not valid JSON ({exc.msg})", hint="one JSON object per line") from None
    if not isinstance(row, dict):
        raise UserError(f"{name}:{number}: a JSON {type(row).__name__}, not an object",
                        hint='one JSON object per line, such as {"text": "..."}')
    return row


def csv_rows(handle: IO[bytes], path: Path, name: str) -> Iterator[dict]:
    reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline=""))
    try:
        for row in reader:
            yield {**row, LINE: reader.line_num}
    except csv.Error as exc:  # a NUL byte, a field over csv's size limit
        raise UserError(f"{name}:{reader.line_num}: {exc}", hint="a CSV file with a header line") from None
    except UnicodeDecodeError:  # decoded a block at a time, ahead of the rows: find the line itself
        with path.open("rb") as again:
            for number, raw in enumerate(again, 1):
                decoded(raw, name, number)
        raise


def decoded(raw: bytes, name: str, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{name}:{number}: not valid UTF-8",
                        hint="save the input as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
