"""The search space of a recipe's `sweep:` section: its parameters, what Optuna suggests for each, and the
check of every trial's recipe before any trial runs.

A trial's recipe is the sweep recipe with the trial's values set as `--set path=value` would set them
(recipe_loader.load_variant), so a sweep value meets the same validation as a command-line override, and
a problem is reported at the sweep parameter's line.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from adaptctl.core.errors import UserError
from adaptctl.core.redact import redact
from adaptctl.recipe.schema import METHOD_CLASSES, SweepRange
from adaptctl.recipe.loader import LoadedRecipe, Where, load_variant

METHOD_NAME = "method.name"
# Every combination is checked when there are at most this many; else each value once.
MAX_CHECKED_POINTS = 256
# A grid is a product: past this it is a mistake (a forgotten step), not a plan.
MAX_GRID_POINTS = 10_000


@dataclass(frozen=True)
class Parameter:
    path: str                       # a recipe field, dotted: train.learning_rate
    choices: tuple | None           # a list of values, or
    range: SweepRange | None        # a range

    def grid_values(self) -> list:
        if self.choices is not None:
            return list(self.choices)
        assert self.range is not None  # a parameter has choices or a range
        values = self.range.grid_values()
        assert values is not None  # a range on a grid has a step (recipe.sweep_problems)
        return values

    def grid_count(self) -> int | None:
        if self.choices is not None:
            return len(self.choices)
        assert self.range is not None  # a parameter has choices or a range
        return self.range.grid_count()

    def labels(self) -> list:
        """The values as Optuna stores them (its storage, the results table, best.yaml's header): each
        text value redacted (a secret in a model path or URL stays out of study.db), made unique if two
        redact alike.  `value_of` maps a label back to the value a trial runs with."""
        labels: list = []
        for value in self.grid_values():
            label = redact(value) if isinstance(value, str) else value
            while label in labels:
                label = f"{label} #{len(labels)}"
            labels.append(label)
        return labels

    def value_of(self, label):
        if self.choices is None:
            return label  # a range's values are numbers, each its own label (a stepless one has no grid to look in)
        values = self.grid_values()
        return values[self.labels().index(label)] if label in self.labels() else label

    def probe_values(self) -> list:
        """The values checked up front: every choice, or a range's two ends."""
        if self.choices is not None:
            return list(self.choices)
        assert self.range is not None  # a parameter has choices or a range
        return [self.range.low, self.range.high]


class Space:
    """The sweep's parameters, method.name first: whether a method.* field applies depends on it."""

    def __init__(self, loaded: LoadedRecipe):
        sweep = loaded.recipe.sweep
        assert sweep is not None  # a sweep runs a recipe with a sweep section (cli sweep checks it)
        self.loaded, self.sweep = loaded, sweep
        items = sorted(self.sweep.parameters.items(), key=lambda item: item[0] != METHOD_NAME)
        self.parameters = [Parameter(path, tuple(v) if isinstance(v, list) else None, v if isinstance(v, SweepRange) else None)
                           for path, v in items]
        self.sampler = self.sweep.chosen_sampler()
        methods = self._by_path().get(METHOD_NAME)
        self.methods = [str(m) for m in methods.choices] if methods and methods.choices else [loaded.recipe.method.name]

    def _by_path(self) -> dict[str, Parameter]:
        return {p.path: p for p in self.parameters}

    # ------------------------------------------------------------ conditional fields
    def applies(self, path: str, values: dict) -> bool:
        """A method.* field applies to the trials whose method has it.  One that no method of the sweep
        has applies everywhere, so that the loader names it (unknown key, did you mean)."""
        if not path.startswith("method.") or path == METHOD_NAME:
            return True
        field = path.split(".")[1]
        having = [m for m in self.methods if field in getattr(METHOD_CLASSES.get(m), "model_fields", {})]
        method = str(values.get(METHOD_NAME, self.loaded.recipe.method.name))
        return not having or method in having

    # ------------------------------------------------------------ Optuna
    def grid(self) -> dict[str, list]:
        """GridSampler's search space, in Optuna's labels."""
        return {p.path: p.labels() for p in self.parameters}

    def grid_size(self) -> int:
        """The grid's points, multiplied out without listing any (a range with a tiny step is counted,
        not built)."""
        size = 1
        for p in self.parameters:
            count = p.grid_count()
            assert count is not None  # a range on a grid has a step (recipe.sweep_problems)
            size *= count
        return size

    def suggest(self, trial) -> dict:
        """The trial's values, suggested through Optuna in the space's order."""
        values: dict = {}
        for p in self.parameters:
            if self.applies(p.path, values):
                values[p.path] = self._suggest_one(trial, p)
        return values

    def _suggest_one(self, trial, p: Parameter):
        if p.choices is not None or self.sampler == "grid":
            return p.value_of(trial.suggest_categorical(p.path, p.labels()))
        r = p.range
        assert r is not None  # no choices: a range
        if r.integers:
            return trial.suggest_int(p.path, r.low, r.high, step=r.step or 1, log=r.log)
        return trial.suggest_float(p.path, r.low, r.high, step=r.step, log=r.log)

    # ------------------------------------------------------------ trial recipes
    def origins(self, values: dict) -> dict[str, Where]:
        """Where each value was written: a list item's own line, else the parameter's."""
        positions, found = self.loaded.positions, {}
        for p in self.parameters:
            key = ("sweep", "parameters", p.path)
            index = p.choices.index(values[p.path]) if p.choices is not None and values.get(p.path) in p.choices else None
            found[p.path] = positions.get(key + (index,)) or positions.get(key) or Where(str(self.loaded.path))
        return found

    def recipe(self, values: dict, name: str | None = None) -> LoadedRecipe:
        """The trial's recipe: the sweep recipe without its sweep section, `values` set as `--set` sets them."""
        overrides = {**values, **({"name": name} if name else {})}
        try:
            return load_variant(self.loaded, overrides, self.origins(values), drop=("sweep",))
        except UserError as exc:
            raise UserError(f"{self.loaded.path}: the sweep's point {describe(values)} is not a valid recipe",
                            hint=exc.hint, details=exc.details or [exc.message]) from None

    def check(self) -> int:
        """Every trial's recipe, validated before any trial runs; how many were checked."""
        if self.sampler == "grid" and self.grid_size() > MAX_GRID_POINTS:
            raise UserError(f"{self._where()}: sweep.parameters: a grid of {self.grid_size():,} points",
                            hint="list fewer values, or use sampler: tpe or random with n_trials")
        points = self.points()
        for values in points:
            self.recipe(values)
        return len(points)

    def points(self) -> list[dict]:
        """The points checked: the whole grid; otherwise every combination of the lists and the ranges'
        ends, or, past MAX_CHECKED_POINTS, each value once beside the others' first."""
        source = {p.path: p.grid_values() if self.sampler == "grid" else p.probe_values() for p in self.parameters}
        combos = 1
        for values in source.values():
            combos *= len(values)
        if self.sampler == "grid" or combos <= MAX_CHECKED_POINTS:
            raw = [dict(zip(source, combo)) for combo in itertools.product(*source.values())]
        else:
            first = {path: values[0] for path, values in source.items()}
            raw = [{**first, path: value} for path, values in source.items() for value in values]
        return unique([self.applicable(point) for point in raw])

    def applicable(self, point: dict) -> dict:
        return {path: value for path, value in point.items() if self.applies(path, point)}

    def _where(self) -> Where:
        return self.loaded.positions.get(("sweep", "parameters")) or Where(str(self.loaded.path))


def unique(points: list[dict]) -> list[dict]:
    seen, kept = set(), []
    for point in points:
        key = tuple(sorted((k, repr(v)) for k, v in point.items()))
        if key not in seen:
            seen.add(key)
            kept.append(point)
    return kept


def describe(values: dict) -> str:
    return ", ".join(f"{path}={value}" for path, value in values.items()) or "(the recipe as written)"
