"""A stop asked for by SIGTERM or Ctrl-C, remembered until the process ends.

The signal handlers raise KeyboardInterrupt where the process is, and a library may swallow it: datasets
hashes a map's function inside a bare `except:` (fingerprint.update_fingerprint), so a SIGTERM that lands
there is lost and the run would go on, a sweep through all its trials.  Remembered here, the stop is
honoured at the next boundary (`raise_if_requested` before each stage and each trial) even then.
"""

from __future__ import annotations

_requested: str | None = None


def request(signal_name: str | None):
    global _requested
    _requested = signal_name


def clear():
    """A new command in this process (tests run several): no stop asked for yet."""
    request(None)


def raise_if_requested(before: str):
    """Interrupted, before `before` starts, if a stop was asked for and the work got past it."""
    if _requested is not None:
        from adaptctl.core.errors import Interrupted

        raise Interrupted(f"stopped by {_requested} before {before}", hint="run the same command again to resume")
