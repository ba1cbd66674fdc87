"""A figure drawn without a display (matplotlib's Agg, as on a server or in CI) and written like every output."""

from __future__ import annotations

import contextlib
from pathlib import Path


@contextlib.contextmanager
def figure(path: Path, size: tuple[float, float], columns: int = 1):
    """Axes to draw on (a row of `columns` of them when more than one); the figure is laid out and saved
    to `path` when the block ends, and closed either way (pyplot keeps every open figure alive).  Agg
    draws without a display, as on a server or in CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, columns, figsize=size)
    try:
        yield ax
        fig.tight_layout()
        save_figure(fig, path)
    finally:
        plt.close(fig)


def save_figure(fig, path: Path):
    """Written under a temporary name and renamed, like every output."""
    from adaptctl.core.rundir import atomic_write

    # the temporary name has no image suffix, so the format is given
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png"))
