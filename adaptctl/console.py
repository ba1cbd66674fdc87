"""Where adaptctl talks: stderr, as a rich display on a terminal and as plain
log lines elsewhere (CI, files), so that `--json` keeps stdout for its one
JSON object.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.markup import escape

from adaptctl.redact import redact

_state = {"quiet": False}
# markup off: messages quote user text ("[query,value]", "[/x]") that rich would
# read as style tags, dropping it or raising MarkupError on a terminal.
stderr = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def set_quiet(quiet: bool):
    _state["quiet"] = quiet


def interactive() -> bool:
    return stderr.is_terminal and not _state["quiet"]


def info(message: str):
    message = redact(message)
    if not _state["quiet"]:
        if stderr.is_terminal:
            stderr.print(message)
        else:
            # Plain lines with a timestamp read well in CI logs.
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def warn(message: str):
    message = redact(message)
    if stderr.is_terminal:
        stderr.print(f"[yellow]warning:[/yellow] {escape(message)}", markup=True)
    else:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def error(message: str):
    message = redact(message)
    if stderr.is_terminal:
        stderr.print(f"[bold red]error:[/bold red] {escape(message)}", markup=True)
    else:
        print(f"error: {message}", file=sys.stderr, flush=True)


class Progress:
    """A rich progress bar on a terminal; a log line every `every` seconds otherwise."""

    def __init__(self, description: str, total: int | None, every: float = 10.0):
        self.description, self.total, self.every = description, total, every
        self.done, self._last, self._bar = 0, time.monotonic(), None

    def __enter__(self):
        if interactive():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=stderr, transient=False)
            self._bar.start()
            self._task = self._bar.add_task(escape(self.description), total=self.total, status="")
        return self

    def advance(self, n: int = 1, status: str = ""):
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n, status=escape(status))
        elif time.monotonic() - self._last >= self.every or (self.total and self.done >= self.total):
            self._last = time.monotonic()
            total = f"/{self.total}" if self.total else ""
            info(f"{self.description}: {self.done}{total} {status}".rstrip())

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
        return False
