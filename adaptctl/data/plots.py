"""prepare's figure: tokens per example in each split."""

from __future__ import annotations

from pathlib import Path

from adaptctl.core.figures import figure


def length_plot(tokenized, path: Path, max_length: int):
    """prepare/lengths.png: tokens per example in each split, against data.max_length."""
    from adaptctl.data import columnar

    with figure(path, (6, 3.5)) as ax:
        for name, ds in tokenized.items():
            ax.hist(columnar.numbers(ds, "num_tokens"), bins=40, alpha=0.5, label=f"{name} ({len(ds)})")
        ax.axvline(max_length, color="red", linestyle="--", label=f"max_length {max_length}")
        ax.set_xlabel("tokens per example")
        ax.set_ylabel("rows")
        ax.legend()
