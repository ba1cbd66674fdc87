"""The UserError for a local file that the OS will not let adaptctl read, shared by every reader."""

from __future__ import annotations

from adaptctl.core.errors import UserError


def cannot_read(path, exc: OSError) -> UserError:
    """The UserError for a data or input file that the OS will not let us read."""
    return UserError(f"cannot read {exc.filename or path}: {exc.strerror or exc}",
                     hint="check the file's permissions (ls -l) and that it is a regular file")
