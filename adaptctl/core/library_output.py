"""The libraries adaptctl drives talk through adaptctl's console.

transformers, datasets and huggingface_hub each attach their own stderr handler, and tqdm bars
("Loading weights", "Map") write to the terminal directly: on a terminal they interleave with
adaptctl's bar, and their lines skip the redaction of secrets.  Here their loggers lose those
handlers and get one that prints through `console` (redacted, formatted like adaptctl's lines);
Python warnings go the same way; library bars are off, and a bar transformers would show while no
adaptctl bar is live (loading weights) becomes an adaptctl bar.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

from adaptctl.core import console

LIBRARIES = ("transformers", "datasets", "huggingface_hub", "peft", "accelerate", "torch")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_REPORT_ROW = re.compile(r"^\s*\|?\s*(\S+)\s*\|\s*(UNEXPECTED|MISSING|MISMATCH|CONVERSION)\b", re.M)
_REPORT_WORDS = {"MISSING": "newly initialized", "UNEXPECTED": "unused from the checkpoint",
                 "MISMATCH": "re-initialized (shape mismatch)", "CONVERSION": "conversion error"}


class ConsoleHandler(logging.Handler):
    """A library's log record as one adaptctl console line: `warning: transformers: ...`."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self._seen: set[str] = set()

    def emit(self, record: logging.LogRecord):
        try:
            message = record.getMessage()
            text = f"{record.name.split('.')[0]}: {condense(message)}"
        except Exception:  # a library's bad format string must not stop a run
            self.handleError(record)
            return
        if text in self._seen:  # the same warning once per batch or per layer says nothing new
            return
        self._seen.add(text)
        if record.levelno >= logging.WARNING and not only_fresh_weights(message):
            console.warn(text)
        else:
            console.info(text)


def condense(message: str) -> str:
    """One line for a message: colour codes dropped, transformers' load-report table summarized
    (its width follows the terminal's and it wraps into fragments at 80 columns)."""
    message = _ANSI.sub("", message)
    if "LOAD REPORT" in message:
        return _load_report(message)
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def only_fresh_weights(message: str) -> bool:
    """A load report whose only news is weights the checkpoint lacks: the task head adaptctl puts on a
    base model is new on every first load, which is no reason for a warning on every run."""
    statuses = {status for _, status in _REPORT_ROW.findall(_ANSI.sub("", message))}
    return "LOAD REPORT" in message and statuses == {"MISSING"}


def _load_report(message: str) -> str:
    head = message.splitlines()[0].replace("LOAD REPORT ", "").strip()
    keys: dict[str, list[str]] = {}
    for key, status in _REPORT_ROW.findall(message):
        keys.setdefault(status, []).append(key)
    parts = [f"{_REPORT_WORDS[status]}: {', '.join(names)}" for status, names in keys.items()]
    return f"{head}: {'; '.join(parts)}" if parts else head


_handler = ConsoleHandler()


def route():
    """Send the libraries' logging and warnings through the console and turn their bars off.
    Idempotent: every stage command calls it."""
    import datasets
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()  # its API: the handler it would otherwise re-create
    for name in LIBRARIES:
        _own(logging.getLogger(name))
    if not _verbosity_env():  # warnings and errors; TRANSFORMERS_VERBOSITY=info still asks for more
        for name in ("transformers", "datasets", "huggingface_hub"):
            logging.getLogger(name).setLevel(logging.WARNING)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()  # also huggingface_hub's
    hf_logging.set_tqdm_hook(_library_bar)
    warnings.showwarning = _show_warning


def _verbosity_env() -> bool:
    import os

    return bool(os.environ.get("TRANSFORMERS_VERBOSITY") or os.environ.get("DATASETS_VERBOSITY"))


def _own(logger: logging.Logger):
    # The libraries' own StreamHandlers hold the stderr of their import time and bypass the console.
    for handler in list(logger.handlers):
        if handler is not _handler and isinstance(handler, logging.StreamHandler):
            logger.removeHandler(handler)
    if _handler not in logger.handlers:
        logger.addHandler(_handler)
    logger.propagate = False  # a root handler (logging.basicConfig, a CI wrapper) would print it twice


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """warnings.warn from a library: one console line naming the library, not a source excerpt."""
    console.warn(f"{_origin(filename)}{category.__name__}: {condense(str(message))}")


def _origin(filename: str) -> str:
    parts = Path(str(filename)).parts
    if "site-packages" in parts and parts.index("site-packages") + 1 < len(parts):
        return parts[parts.index("site-packages") + 1].split(".")[0] + ": "
    return ""


def _library_bar(factory, args, kwargs):
    """transformers' tqdm hook: with its bars off, `factory` is a silent stand-in.  While no adaptctl
    bar is live, a bar over a sized iterable (loading weights) is shown as an adaptctl bar instead."""
    iterable = args[0] if args else kwargs.get("iterable")
    if not console.interactive() or console.live_bar() or not hasattr(iterable, "__len__"):
        return factory(*args, **kwargs)
    return _ConsoleBar(iterable, str(kwargs.get("desc") or "working").lower())


class _ConsoleBar:
    """The part of tqdm's interface transformers uses on its bars: iterate, update, close, with."""

    def __init__(self, iterable, description: str):
        self._iterable = iterable
        self._progress = console.Progress(description, len(iterable), transient=True)

    def __iter__(self):
        with self._progress as progress:
            for item in self._iterable:
                yield item
                progress.advance(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __getattr__(self, name):  # set_postfix, refresh, update, close...: nothing to show
        return lambda *args, **kwargs: None


def quiet_libraries():
    """One bar on the screen, adaptctl's: the libraries' bars are off and their log lines and
    warnings come out through adaptctl's console."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    route()
