"""Line-aligned plain-text files as one table (`source.columns`): a parallel corpus such as Multi30k's
`train.en` / `train.de`, where line N of every file is row N, one column per file.

The files are read here, not by `datasets`' text loader: that loader drops blank lines, and one line
dropped from one file would pair every later sentence with its neighbour's translation.  So every line
is a row, a blank one included (the task's mapping then drops rows whose input or target is empty and
counts them), and files of different lengths are refused.
"""

from __future__ import annotations

from pathlib import Path

from adaptctl.data.files import cannot_read
from adaptctl.core.errors import UserError

HINT = ("source.columns names line-aligned files (line N of each is row N): check that they are the "
        "two sides of one corpus, with no line added or lost")


def column_files(source, folder: Path) -> dict[str, Path]:
    """Each column's file: source.columns' paths, relative to source.path (the folder they are in)."""
    return {name: folder / Path(file).expanduser() for name, file in source.columns.items()}


def read_lines(path: Path, limit: int | None = None) -> list[str]:
    """The file's lines (its first `limit`) without their ends.  Split on newline bytes only, as binary
    files iterate: str.splitlines also splits on the Unicode line and paragraph separators (U+2028,
    U+0085, ...) that real text contains, and one such character would shift a file against its partner."""
    from itertools import islice

    lines = []
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(islice(handle, limit), 1):
                try:
                    lines.append(raw.decode("utf-8").removesuffix("\n").removesuffix("\r"))
                except UnicodeDecodeError:
                    raise UserError(f"{path}:{number}: not valid UTF-8",
                                    hint="save the file as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    except OSError as exc:
        raise cannot_read(path, exc) from None
    return lines


def line_count(path: Path) -> int:
    """The lines read_lines gives, counted in blocks of bytes (validate reads no more than it must)."""
    count, last = 0, b"\n"
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                count, last = count + block.count(b"\n"), block[-1:]
    except OSError as exc:
        raise cannot_read(path, exc) from None
    return count + (last != b"\n")  # a last line without its newline is a line too


def check_aligned(files: dict[str, Path]) -> int:
    """The files' common number of lines; a missing file, an empty one or another length is a UserError."""
    counts = {}
    for name, path in files.items():
        if not path.is_file():
            raise UserError(f"data not found: {path}", hint="source.columns' files are relative to source.path")
        counts[name] = line_count(path)
    (first, lines), *others = counts.items()
    for name, other in others:
        if other != lines:
            raise UserError(f"{files[name]} has {other} lines and {files[first]} has {lines}", hint=HINT)
    if not lines:
        raise UserError(f"{files[first]} has no lines", hint="check that source.columns names the files you meant")
    return lines


def read_columns(files: dict[str, Path], limit: int | None = None) -> dict[str, list[str]]:
    """column -> its lines (the first `limit` of them), the files checked to be of one length first."""
    check_aligned(files)
    return {name: read_lines(path, limit) for name, path in files.items()}


def places(files: dict[str, Path], rows: int) -> list[str]:
    """`file:line` of each row, in the first column's file (its line in every other file is the same)."""
    first = next(iter(files.values()))
    return [f"{first}:{n}" for n in range(1, rows + 1)]
