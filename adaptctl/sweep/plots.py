"""The sweep's figures: the metric against each parameter, and against inference speed with the Pareto front."""

from __future__ import annotations

from pathlib import Path

from adaptctl.core.figures import figure


def sweep_plots(table: list[dict], parameters: list[str], metric: str, direction: str, out: Path) -> dict:
    """sweep/: the metric against each parameter, and against inference speed with the Pareto front
    marked (the trials no other beats on both).  {title: file name}."""
    done = [row for row in table if isinstance(row.get(metric), (int, float))]
    plots = {}
    for index, name in enumerate(parameters):
        file = f"metric_vs_param{index}.png"
        _metric_against(done, name, metric, out / file)
        plots[f"{metric} against {name}"] = file
    fast = [row for row in done if isinstance(row.get("examples_per_second"), (int, float))]
    if fast:
        _pareto_plot(fast, metric, direction, out / "metric_vs_speed.png")
        plots[f"{metric} against inference speed"] = "metric_vs_speed.png"
    return plots


def _metric_against(rows: list[dict], name: str, metric: str, path: Path):
    """Numbers on their own axis (log where they span decades, as learning rates do); other values as categories."""
    values = [row.get(name) for row in rows]
    numeric = bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    labels = sorted({str(v) for v in values})
    xs = values if numeric else [labels.index(str(v)) for v in values]
    with figure(path, (5, 3.5)) as ax:
        ax.scatter(xs, [row[metric] for row in rows])
        if numeric and min(values) > 0 and max(values) / min(values) >= 100:  # type: ignore[type-var, operator]  # numeric: no None
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(labels)), labels)
        _label_trials(ax, rows, xs, metric)
        ax.set_xlabel(name)
        ax.set_ylabel(metric)


def _label_trials(ax, rows: list[dict], xs: list, metric: str):
    for row, x in zip(rows, xs):
        ax.annotate(str(row["trial"]), (x, row[metric]), fontsize=7, xytext=(3, 3), textcoords="offset points")


def pareto_front(rows: list[dict], metric: str, direction: str) -> list[dict]:
    """The trials that no other trial beats on both the metric and inference speed."""
    sign = 1 if direction == "maximize" else -1

    def beats(a, b):
        better = (sign * a[metric] >= sign * b[metric], a["examples_per_second"] >= b["examples_per_second"])
        strictly = (sign * a[metric] > sign * b[metric], a["examples_per_second"] > b["examples_per_second"])
        return all(better) and any(strictly)

    return [row for row in rows if not any(beats(other, row) for other in rows)]


def _pareto_plot(rows: list[dict], metric: str, direction: str, path: Path):
    front = sorted(pareto_front(rows, metric, direction), key=lambda row: row["examples_per_second"])
    with figure(path, (5, 3.5)) as ax:
        ax.scatter([r["examples_per_second"] for r in rows], [r[metric] for r in rows], label="trials")
        ax.plot([r["examples_per_second"] for r in front], [r[metric] for r in front], color="red", marker="o",
                label="Pareto front")
        _label_trials(ax, rows, [r["examples_per_second"] for r in rows], metric)
        ax.set_xlabel("inference examples/s")
        ax.set_ylabel(metric)
        ax.legend()
