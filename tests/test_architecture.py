"""The architecture the code promises (docs/architecture.md): imports flow one way through the layers,
with no cycle, and what is particular to a task or a method lives in its spec (adaptctl/tasks/,
adaptctl/methods/), not in branches on its name elsewhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "adaptctl"

# Top to bottom: a module may import its own layer and the layers below it, never one above.  The recipe
# sits above the task and method specs because it is built from them (its task names, metric lists and
# method union); training and evaluation sit below them, taking what they train or score as arguments.
LAYERS = [
    ("cli", "__main__", "plan"),
    ("sweep", "serve", "recipe.starter", "run.runs"),
    ("pipeline", "predict"),
    ("stages",),
    ("distill", "export", "api"),
    ("recipe", "run"),
    ("tasks", "methods"),
    ("training", "evaluation", "report", "models.loading", "retrieval"),
    ("data", "core", "models", ""),
]


def module_names() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(p for p in parts if p != "__init__")] = path
    return found


def imports_of(path: Path, known: dict) -> set[str]:
    """Every adaptctl module a file imports, at module level or inside a function, or names in a string
    (a registry's "adaptctl.tasks.seq2seq" or an f"adaptctl.retrieval.{name}" that importlib loads)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            prefix = str(node.values[0].value).removeprefix("adaptctl.")
            if prefix != node.values[0].value:
                found.update(name for name in known if name.startswith(prefix))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("adaptctl."):
            found.add(node.value.removeprefix("adaptctl."))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "adaptctl":
            base = node.module.removeprefix("adaptctl").lstrip(".")
            for alias in node.names:
                child = f"{base}.{alias.name}".lstrip(".")
                found.add(child if child in known else base)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("adaptctl.") for a in node.names if a.name.startswith("adaptctl."))
    return {name for name in found if name in known}


def layer_of(module: str) -> int:
    """The layer of the longest entry that is the module or a package above it."""
    entries = {entry: depth for depth, names in enumerate(LAYERS) for entry in names}
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in entries:
            return entries[".".join(parts[:end])]
    raise AssertionError(f"adaptctl.{module} is in no layer of tests/test_architecture.py: add it")


def graph() -> dict[str, set[str]]:
    known = module_names()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def test_no_module_imports_one_on_a_higher_layer():
    upward = [f"adaptctl.{a} -> adaptctl.{b}" for a, targets in graph().items() for b in targets
              if layer_of(b) < layer_of(a)]
    assert upward == []


def cycles_of(edges: dict[str, set[str]]) -> list[list[str]]:
    cycles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycle():
    assert cycles_of(graph()) == []


def test_no_cycle_between_packages():
    """Packages as units (core, recipe, tasks, stages...): one package never needs another that needs it back,
    even through modules that do not import each other."""
    packages: dict[str, set[str]] = {}
    for module, targets in graph().items():
        packages.setdefault(module.split(".")[0], set()).update(t.split(".")[0] for t in targets)
    assert cycles_of({name: targets - {name} for name, targets in packages.items()}) == []


# A branch on a task's or a method's name, outside the modules that define them.
NAME_BRANCH = re.compile(r"""\b(task|task_name|method\.name)\s*(==|!=|\bin\b|\bnot in\b)\s*[("']""")


def test_tasks_and_methods_are_asked_not_named():
    found = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(("tasks/", "methods/")):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if NAME_BRANCH.search(line):
                found.append(f"adaptctl/{relative}:{number}: {line.strip()}")
    assert found == []


def test_every_task_and_method_spec_is_complete():
    """Every hook a caller may use is set (or None where the spec says the task has no such thing), and
    the recipe's names are the registries' names."""
    from adaptctl.methods import METHOD_SPECS
    from adaptctl.recipe.schema import METHOD_NAMES, TASKS, Recipe
    from adaptctl.tasks import all_tasks

    for spec in all_tasks():
        for hook in ("templates", "tokenize", "collator", "evaluate", "data_problems", "model_kwargs"):
            assert callable(getattr(spec, hook)), (spec.name, hook)
        assert spec.model_class().__name__ == spec.auto_class
        assert spec.metrics and spec.starter["data"], spec.name
    assert TASKS == tuple(spec.name for spec in all_tasks())
    assert METHOD_NAMES == tuple(METHOD_SPECS)
    schema = Recipe.model_json_schema()
    assert set(schema["properties"]["task"]["enum"]) == set(TASKS)
    for name, spec in METHOD_SPECS.items():
        assert spec.config.model_validate({"name": name}).name == name


def test_the_stage_table_runs_every_stage_of_the_run_directory():
    from adaptctl import pipeline
    from adaptctl.core.rundir import STAGES

    assert tuple(pipeline.STAGES) == STAGES
    assert all(callable(module.run) for module in pipeline.STAGES.values())
