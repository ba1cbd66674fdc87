"""evaluate's figures: the confusion matrix, the reliability diagram, the metrics per slice."""

from __future__ import annotations

from pathlib import Path

from adaptctl.core.figures import figure


def confusion_plot(matrix: list[list[int]], labels: list[str], path: Path):
    from sklearn.metrics import ConfusionMatrixDisplay

    import numpy as np

    size = max(4, 0.6 * len(labels) + 2)
    with figure(path, (size, size)) as ax:
        ConfusionMatrixDisplay(np.asarray(matrix), display_labels=labels).plot(ax=ax, colorbar=False, xticks_rotation=45)


def reliability_plot(table: list[dict], before: list[dict] | None, path: Path):
    """The reliability diagram: accuracy against mean confidence per confidence bin (a calibrated model
    lies on the diagonal), after temperature scaling beside before it when a temperature was fitted."""
    with figure(path, (5, 4.5)) as ax:
        ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="calibrated")
        for rows, name in ((before, "before calibration"), (table, "after calibration" if before else "model")):
            if rows:
                kept = [r for r in rows if r["count"]]
                ax.plot([r["confidence"] for r in kept], [r["accuracy"] for r in kept], marker="o", label=name)
        ax.set_xlabel("confidence (top class probability)")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend()


def slice_plot(template: str, values: dict, path: Path):
    """evaluate/slice_N.png: each metric per value of one slice, bars grouped by metric, counts in the legend."""
    import numpy as np

    names = [n for n in dict.fromkeys(m for row in values.values() for m in row["metrics"]) if n not in ("loss", "perplexity")]
    width = 0.8 / max(len(values), 1)
    with figure(path, (max(5, 1.2 * len(names) + 2), 3.5)) as ax:
        for k, (value, row) in enumerate(values.items()):
            heights = [row["metrics"].get(n, 0) for n in names]
            ax.bar(np.arange(len(names)) + k * width, heights, width, label=f"{value} ({row['count']})")
        ax.set_xticks(np.arange(len(names)) + width * (len(values) - 1) / 2, names)
        ax.set_title(f"by {template}")
        ax.legend(fontsize="small")
