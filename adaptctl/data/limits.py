"""Bounds on what a recipe or its data can make adaptctl do for ever: a template's running time and
output (a recipe's Jinja is code from whoever wrote it), the length of a line read whole, how deep JSON
nests, and the size of a recipe.

A template that loops a billion times, a data file that is one endless line (`/dev/zero` copied into
a file, a minified dump) or JSON nested a hundred thousand deep ends in a message naming the field or
the file, not a hang, an exhausted memory or a crashed process.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import time

# A template renders a row in microseconds; this is a million times that, in CPU time (a loaded machine
# that stalls the process does not count against the template).
RENDER_SECONDS = 5.0
# A rendered row longer than this is no text to train on: ten million characters (max_length is at most
# 131,072 tokens, some 600,000 characters).
MAX_RENDER_CHARS = 10_000_000
# A line read whole (a JSON line, a CSV row, a text line) may be this long; a longer one is refused.
MAX_LINE_BYTES = 64 * 2**20
# Records nest a few levels; pyarrow's JSON reader crashes the process (a segmentation fault) on some tens
# of thousands, and Python's own stops near a thousand.
MAX_JSON_DEPTH = 500
_JSON_STRING = re.compile(rb'"(?:[^"\\\n]|\\.)*"')  # a JSON string on one line (JSON escapes its newlines)
# A recipe is a few kilobytes; one over this is not a recipe (or is /dev/zero).
MAX_RECIPE_BYTES = 2**20


class TimeLimitError(Exception):
    """Raised inside a template's rendering when its time is up."""

    def __init__(self, seconds: float):
        super().__init__(f"rendering used more than {seconds:g} s of CPU time (a loop over too much?)")


@contextlib.contextmanager
def time_limit(seconds: float | None = None):
    """Raise TimeLimitError in the block once it has used `seconds` of CPU time (default RENDER_SECONDS;
    a SIGVTALRM timer: the main thread only, elsewhere the block runs unbounded).  An enclosing limit is
    kept: an inner one never extends it."""
    seconds = RENDER_SECONDS if seconds is None else seconds
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    start = time.process_time()

    def expired(signum, frame):
        raise TimeLimitError(seconds)

    previous_handler = signal.signal(signal.SIGVTALRM, expired)
    outer, _ = signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    if 0 < outer < seconds:  # an enclosing limit ends sooner: keep its time
        signal.setitimer(signal.ITIMER_VIRTUAL, outer)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous_handler)
        if outer:  # give the enclosing limit what it has left (at least a moment, so it still fires)
            signal.setitimer(signal.ITIMER_VIRTUAL, max(outer - (time.process_time() - start), 1e-3))


def check_rendered(text: str) -> str:
    if len(text) > MAX_RENDER_CHARS:
        raise ValueError(f"the rendered text has {len(text):,} characters, more than {MAX_RENDER_CHARS:,}")
    return text


def longest_line(path, limit: int | None = None, lines: int | None = None) -> tuple[int, int] | None:
    """(line number, length so far) of the first line of `path` longer than `limit` bytes (default
    MAX_LINE_BYTES) among its first `lines` (default all), or None.  Reads blocks, never a whole line,
    so an endless line costs no memory."""
    limit = MAX_LINE_BYTES if limit is None else limit
    line, length = 1, 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            start = 0
            while (end := block.find(b"\n", start)) >= 0:
                if length + end - start > limit:
                    return line, length + end - start
                line, length, start = line + 1, 0, end + 1
                if lines is not None and line > lines:
                    return None
            length += len(block) - start
            if length > limit:
                return line, length
    return None


def read_at_most(path, limit: int) -> bytes | None:
    """The bytes of `path` (a file, a pipe, a device), or None when it holds more than `limit`: read
    `limit` + 1 bytes, never the whole of what may not end."""
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    return None if len(data) > limit else data


def json_loads(text: str):
    """json.loads for text a user gave: a document nested deeper than Python recurses (`[[[[...`) is a
    JSONDecodeError like any other bad JSON, not a RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested deeper than Python can read", str(text), 0) from None


def too_deep_json(path, limit: int | None = None, lines: int | None = None) -> int | None:
    """The line of `path` (JSON lines, or a JSON document over many lines) where brackets nest deeper
    than `limit` (default MAX_JSON_DEPTH) among its first `lines` (default all), or None.  Strings are
    taken out first (a bracket in a text is no nesting); a line is scanned bracket by bracket only when
    it could pass the limit."""
    limit = MAX_JSON_DEPTH if limit is None else limit
    depth = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if lines is not None and number > lines:
                return None
            line = _JSON_STRING.sub(b"", line) if b'"' in line else line
            opens = line.count(b"[") + line.count(b"{")
            if depth + opens > limit:  # maybe too deep: follow this line's brackets one by one
                for bracket in re.findall(rb"[\[\]{}]", line):
                    depth += 1 if bracket in b"[{" else -1
                    if depth > limit:
                        return number
            else:
                depth += opens - line.count(b"]") - line.count(b"}")
    return None
