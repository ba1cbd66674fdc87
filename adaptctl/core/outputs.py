"""Files a user names for adaptctl to write outside a run directory (`predict --output`), written
without replacing anything adaptctl did not make.

What is at the path decides (README, Guarantees: Outputs):
- nothing: the file is written under a temporary name beside it and renamed, as run outputs are, so
  a reader never sees half of it;
- a pipe (FIFO) or a character device (`/dev/stdout`, `/dev/null`, a terminal), named directly or
  through a symbolic link: written through, as a shell's `>` would, never renamed over or removed;
- a regular file: refused unless `--overwrite`, since adaptctl cannot tell a file it wrote from the
  user's own; with `--overwrite` it is replaced whole, and through a symbolic link the file the link
  points at is replaced and the link stays;
- anything else (a folder, a socket, a block device, a link to nothing): refused.
Secrets are redacted from the text, as from every output (redact.py).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from adaptctl.core.errors import UserError
from adaptctl.core.redact import redact
from adaptctl.core.rundir import atomic_write, file_kind, write_failure


def check(path: Path, option: str = "--output", overwrite: bool = False) -> Path | None:
    """Where the text will go: the path to write through (a pipe or a device), or None to write a new
    file (atomically).  Refused here, before any work, is what would be replaced or cannot be written."""
    path = Path(path)
    try:
        info = os.stat(path)  # follows a symbolic link: what the link points at decides
    except FileNotFoundError:
        if path.is_symlink():
            raise UserError(f"{option} {path} is a symbolic link to {os.readlink(path)}, which does not exist",
                            hint=f"name a new file, or remove the link first (rm {path})") from None
        return None
    except OSError as exc:
        raise UserError(f"{option} {path}: {exc.strerror or exc}", hint="name a file in a folder you may write to") from None
    mode = info.st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return path
    if stat.S_ISREG(mode):
        if overwrite:
            return None
        raise UserError(f"{option} {path} is an existing file, and adaptctl replaces no file it cannot tell it wrote",
                        hint="add --overwrite to replace it, or name a new file")
    example = path / "predictions.jsonl" if stat.S_ISDIR(mode) else "predictions.jsonl"
    raise UserError(f"{option} {path} is {file_kind(mode)}", hint=f"name a file, e.g. {option} {example}")


def write(path: Path, text, option: str = "--output", overwrite: bool = False) -> Path:
    """Write `text` (a string, or an iterable of strings written as they come: predict's chunks), redacted,
    to the user's `path` by the rules above (checked again: the path may have changed since the first check)."""
    path = Path(path)
    chunks = [text] if isinstance(text, str) else text
    through = check(path, option, overwrite)
    if through is None:
        # a symbolic link to a regular file (with --overwrite): replace what it points at, keep the link
        return atomic_write(path.resolve() if path.is_symlink() else path, lambda tmp: _write_all(tmp, chunks))
    try:
        _write_all(through, chunks)  # no O_CREAT surprise: it exists, it is a pipe/device
    except OSError as exc:
        mapped = write_failure(through, exc)
        raise (mapped or UserError(f"{option} {path}: cannot write: {exc.strerror or exc}",
                                   hint="name a file in a folder you may write to")) from None
    return path


def _write_all(path: Path, chunks):
    with open(path, "w", encoding="utf-8") as handle:
        for chunk in chunks:
            handle.write(redact(chunk))
            handle.flush()  # a pipe's reader gets each chunk as it is written
