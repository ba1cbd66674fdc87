"""Where adaptctl talks: stderr, as a rich display on a terminal and as plain
log lines elsewhere (CI, files), so that `--json` keeps stdout for its one
JSON object.
"""

from __future__ import annotations

import os
import sys
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress
from rich.table import Column
from rich.text import Text

from adaptctl.core.redact import redact

_state = {"quiet": False}
# markup off: messages quote user text ("[query,value]", "[/x]") that rich would
# read as style tags, dropping it or raising MarkupError on a terminal.
stderr = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def set_quiet(quiet: bool):
    _state["quiet"] = quiet


def is_quiet() -> bool:
    return _state["quiet"]


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


# How often, at most, a progress line is written without a terminal (CI logs); a stage may ask for less often.
EVERY_ENV = "ADAPTCTL_PROGRESS_SECONDS"


def _every(default: float) -> float:
    try:
        return max(float(os.environ.get(EVERY_ENV, default)), 0.0)
    except ValueError:
        return default


def hide_progress(hidden: bool = True):
    """No progress bars or lines from here on (adaptctl serve: a batch every few milliseconds is not
    progress to show; the server says what it does in its own lines)."""
    _state["no_progress"] = hidden


def live_bar() -> bool:
    """Whether an adaptctl bar is on the screen now (library bars stay hidden while it is)."""
    return _state.get("bars", 0) > 0


class Progress:
    """A rich progress bar on a terminal, sized to its width.  Without one, a log line at most every
    `every` seconds, and only when the count or the status changed since the last line: a CI log shows
    progress, not the same metrics again and again."""

    def __init__(self, description: str, total: int | None, every: float = 10.0, transient: bool = False):
        self.description, self.total, self.every = description, total, _every(every)
        self.done, self._last, self._bar, self._transient = 0, time.monotonic(), None, transient
        self._written, self._status = (0, ""), ""
        self._hidden = _state.get("no_progress", False)

    def __enter__(self):
        if interactive() and not self._hidden:
            self._bar = _rich_progress(stderr, self._transient)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, status="")
            _state["bars"] = _state.get("bars", 0) + 1
        return self

    def advance(self, n: int = 1, status: str = ""):
        self.done += n
        self._status = status
        if self._bar is not None:
            self._bar.update(self._task, advance=n, status=redact(status))
            return
        if self._hidden:
            return
        finished = self.total is not None and bool(self.total) and self.done >= self.total
        if finished or time.monotonic() - self._last >= self.every:
            self._log()

    def _log(self):
        """Write the current state, unless the last line already said it.  The status (metrics) is
        repeated only when it changed: a line never restates numbers the log already has."""
        if (self.done, self._status) == self._written:
            return
        status = self._status if self._status != self._written[1] else ""
        total = f"/{self.total}" if self.total else ""
        info(f"{self.description}: {self.done}{total} {status}".rstrip())
        self._written, self._last = (self.done, self._status), time.monotonic()

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
            _state["bars"] -= 1
        elif self.done and not self._hidden:
            self._log()  # where it stopped (a run shorter than its total, or a stop before the next line)
        return False


def _rich_progress(console: Console, transient: bool = False):
    """One line: description, bar, count, time left and a status that is cut to what is left of the
    width.  A line wider than the terminal wraps, and the live display then redraws from the wrong row,
    leaving fragments: narrow terminals get a shorter bar and no time column."""
    width = console.width
    columns = [TextColumn("{task.description}", markup=False, table_column=Column(no_wrap=True)),
               BarColumn(bar_width=40 if width >= 120 else 20 if width >= 64 else 10), MofNCompleteColumn()]
    if width >= 60:
        columns.append(TimeRemainingColumn())
    return RichProgress(*columns, _StatusColumn(console, list(columns)), console=console, transient=transient)


class _StatusColumn(ProgressColumn):
    """The task's `status` field, cut with an ellipsis to the room the other columns leave."""

    def __init__(self, console: Console, others: list):
        super().__init__(table_column=Column(no_wrap=True, overflow="ellipsis"))
        self._console, self._others = console, others

    def render(self, task):
        # one space between columns; one column spare so that the cursor never wraps the line
        used = sum(self._console.measure(column(task)).maximum + 1 for column in self._others)
        text = Text(str(task.fields.get("status", "")), no_wrap=True, overflow="ellipsis")
        text.truncate(max(self._console.width - used - 1, 0), overflow="ellipsis")
        return text
