"""The error types that the CLI maps to exit codes (docs/exit-codes.md).

A `UserError` is the user's to fix (recipe, data, paths): exit 1, a message
that names the file/line/field, and a hint; never a traceback.  `RunFailed`
means the run itself broke (diverged, out of memory): exit 3, naming what was
kept.  Anything else is a bug in adaptctl and keeps its traceback.
"""

from __future__ import annotations


class AdaptctlError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, *, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or []

    def render(self) -> str:
        lines = [self.message, *self.details]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class UserError(AdaptctlError):
    """Wrong input: recipe, data, paths, flags. Exit 1."""

    exit_code = 1


class RunFailed(AdaptctlError):
    """The run broke (non-finite loss, out of memory, a failed check). Exit 3."""

    exit_code = 3


class Interrupted(AdaptctlError):
    """Ctrl-C or SIGTERM after a resumable checkpoint was saved. Exit 130."""

    exit_code = 130

