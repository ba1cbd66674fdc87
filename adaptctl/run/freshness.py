"""Which stages a recipe needs, what each stage's outputs depend on, and whether the outputs on
disk are still those of the current recipe.

A stage's key is a hash of the whole resolved recipe minus the sections that cannot affect it
(NOT_READ_BY), of its upstream stages' keys, and of the content of what it reads beyond the
recipe (data files, a teacher).  Listing what a stage ignores rather than what it reads means a
field added later re-runs the stage instead of being skipped as stale.

Keys are derived from the recipe alone, recursively through the upstream stages, so a stage
command can tell before anything runs whether the work on disk was made for this recipe.
"""

from __future__ import annotations

from adaptctl.core import console
from adaptctl.core.errors import UserError
from adaptctl.core.rundir import json_hash

# Sections a stage's outputs cannot depend on.  Train reads evaluate.batch_size only to batch its
# validation loss, which does not change the weights: excluding `evaluate` lets a user re-evaluate
# with other settings without re-training.
# `sweep` is read by `adaptctl sweep` alone (its trials' recipes have none): no stage's outputs depend on it,
# and leaving it out keeps the keys of runs made before the section existed.
NOT_READ_BY = {
    "prepare": ("name", "description", "method", "train", "distill", "evaluate", "export", "sweep", "rl"),
    "train": ("name", "description", "distill", "evaluate", "export", "sweep"),
    "distill": ("name", "description", "evaluate", "export", "sweep"),
    "evaluate": ("name", "description", "export", "sweep"),
    "export": ("sweep",),  # the model card quotes every other section, name and description included
}
# Fields of a section in NOT_READ_BY that the stage reads all the same, counted only where set (so that
# recipes without them keep their keys): prepare keeps the evaluate.slices columns beside the model inputs.
ALSO_READ = {"prepare": (("evaluate", "slices"), ("evaluate", "canaries"), ("evaluate", "canary_copies"))}
# Sections added after runs were made, counted only where a recipe sets them, so that the recipes without
# them keep their keys (a dumped `rl: null` would make every earlier run stale).
COUNTED_WHERE_SET = ("rl",)
# Fields that set how fast a stage runs, not what it makes: changing them re-runs nothing.
RUNTIME_FIELDS = (("train", "threads"), ("train", "distributed", "timeout_minutes"))


def model_stage(recipe) -> str | None:
    """Which stage produces the model that evaluate and export use (None: the method trains nothing)."""
    from adaptctl.methods import get_method

    if not get_method(recipe.method.name).trains:
        return None
    return "distill" if recipe.distill else "train"


def plan(recipe) -> list[str]:
    stages = ["prepare", model_stage(recipe), "evaluate", "export"]
    return [s for s in stages if s and not (s == "export" and model_stage(recipe) is None)]


def upstream(stage: str, recipe) -> tuple[str, ...]:
    producer = model_stage(recipe)
    after_training = tuple(s for s in ("prepare", producer) if s)
    return {"prepare": (), "train": ("prepare",), "distill": ("prepare",),
            "evaluate": after_training, "export": after_training}[stage]


def key_parts(name: str, ctx) -> dict:
    """What stage `name`'s outputs depend on, for the current recipe."""
    recipe = _without_runtime_fields(ctx.recipe.model_dump(mode="json"))
    parts = {"recipe": {s: v for s, v in recipe.items()
                        if s not in NOT_READ_BY[name] and not (s in COUNTED_WHERE_SET and v is None)},
             **_also_read(name, recipe),
             "upstream": {s: expected_key(s, ctx) for s in upstream(name, ctx.recipe)},
             "inputs": all_inputs(name, ctx)}
    if name == "export":
        # The model card quotes evaluate's figures: a re-evaluated model is re-exported.
        parts["evaluated"] = expected_key("evaluate", ctx) if is_fresh("evaluate", ctx) else None
    return parts


def _also_read(name: str, recipe: dict) -> dict:
    found = {}
    for section, field in ALSO_READ.get(name, ()):
        if value := (recipe.get(section) or {}).get(field):
            found[f"{section}.{field}"] = value
    return found


def _without_runtime_fields(recipe: dict) -> dict:
    for *sections, name in RUNTIME_FIELDS:
        holder = recipe
        for section in sections:
            holder = holder.get(section) or {}
        holder.pop(name, None)
    return recipe


def all_inputs(name: str, ctx) -> dict:
    """What stage `name` and its upstream stages read beyond the recipe: an edited data file is
    then named in a train or evaluate refusal, not only in prepare's."""
    found = {}
    for before in upstream(name, ctx.recipe):
        found.update(all_inputs(before, ctx))
    return {**found, **ctx.inputs_of(name)}


def expected_key(name: str, ctx) -> str:
    return json_hash(key_parts(name, ctx))


def is_fresh(name: str, ctx) -> bool:
    return ctx.run.is_complete(name, expected_key(name, ctx))


# ------------------------------------------------------------ stage commands run alone
def with_upstream(stages: list[str], ctx, *, prepare_missing: bool = True) -> list[str]:
    """`stages` preceded by a `prepare` that is missing or stale; a missing or stale training
    stage is a UserError naming what changed and the command that makes it."""
    for stage in stages:
        ctx.inputs_of(stage)  # what a stage reads must exist (a teacher, data files) before its upstream runs
    needed = []
    for stage in stages:
        for before in reversed(upstream(stage, ctx.recipe)):  # the training stage first: it decides
            if before in stages or before in needed or is_fresh(before, ctx):
                continue
            if before == "prepare" and prepare_missing:
                console.info(f"prepare: {_state(before, ctx)}; preparing the data first")
                needed.append(before)
                continue
            raise _stale_error(stage, before, ctx)
    return needed + stages


def _stale_error(stage: str, before: str, ctx) -> UserError:
    command = _command(before, ctx)
    run_all = _command("run", ctx)
    return UserError(f"{stage} needs the {before} stage of this recipe, but {ctx.run.stage(before)} is {_state(before, ctx)}",
                     hint=f"run `{command}` (or `{run_all}`) first" +
                     (", with the same --set options" if ctx.overrides else ""))


def _command(stage: str, ctx) -> str:
    words = ["adaptctl", stage, str(ctx.loaded.path)]
    if ctx.run_dir_given:
        words += ["--run-dir", str(ctx.run.root)]
    return " ".join(words)


def _state(name: str, ctx) -> str:
    """Why stage `name`'s outputs cannot be used: missing, not complete, or what changed."""
    manifest = ctx.run.read_manifest(name)
    if manifest is None:
        return "missing"
    if manifest.get("status") != "complete":
        return f"{manifest.get('status', 'incomplete')}, not complete"
    before = manifest.get("key_parts")
    if not isinstance(before, dict):
        return "stale: it was made by an earlier adaptctl version"
    changes = changed(before, key_parts(name, ctx))
    return "stale: " + ("; ".join(changes) if changes else "its inputs changed")


def changed(before: dict, now: dict) -> list[str]:
    """The differences between two key_parts, in words, the recipe fields first."""
    fields = [f"{path} changed ({_short(old)} -> {_short(new)})"
              for path, old, new in _diff(before.get("recipe") or {}, now["recipe"])]
    stages = [f"its {s} stage was re-run" for s in now["upstream"]
              if (before.get("upstream") or {}).get(s) != now["upstream"][s] and not fields]
    inputs = [f"the content of {input_name(k)} changed"
              for k in sorted(set(now["inputs"]) | set(before.get("inputs") or {}))
              if (before.get("inputs") or {}).get(k) != now["inputs"].get(k)]
    return (fields[:4] + ([f"and {len(fields) - 4} more fields"] if len(fields) > 4 else [])) + inputs + stages


def input_name(key: str) -> str:
    """An input's key as the recipe names it: the data files are data.source, data.validation, data.test."""
    return f"data.{key}" if key in ("source", "validation", "test") else key


def _diff(old: dict, new: dict):
    before, after = flatten(old), flatten(new)
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path):
            yield path, before.get(path), after.get(path)


def flatten(document: dict, prefix: str = "") -> dict:
    """{"data": {"max_length": 8}} -> {"data.max_length": 8}: the fields of a recipe by their dotted names."""
    flat = {}
    for key, value in document.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def _short(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ------------------------------------------------------------ runs chained through model.base
def stale_chain(run_dir, seen: frozenset = frozenset()) -> str | None:
    """Why the model of `run_dir` (a run chained on earlier runs through model.base) no longer matches
    what it was trained on: an earlier run's model stage re-run since, or gone; None when every link of
    the chain still holds (or the run is not chained).  The check evaluate and export make through
    their stage keys, for readers with no recipe (predict)."""
    from pathlib import Path

    from adaptctl.core.rundir import RunDir, run_model_folder

    run = RunDir(run_dir)
    found = run_model_folder(run_dir)
    manifest = run.read_manifest(found[1]) if found else None
    recorded = ((manifest or {}).get("key_parts") or {}).get("inputs", {}).get("base_run")
    lineage = (run.read_manifest("prepare") or {}).get("lineage") or []
    if not isinstance(recorded, dict) or len(lineage) < 2 or not isinstance(lineage[-2], dict):
        return None
    parent = lineage[-2].get("run")
    if not parent or parent in seen:
        return None
    now = run_model_folder(parent)
    key = (RunDir(parent).read_manifest(now[1]) or {}).get("key") if now else None
    if now is None or now[1] != recorded.get("stage") or key != recorded.get("key"):
        state = "has no complete model any more" if now is None else f"was re-run since ({now[1]})"
        return f"{Path(run_dir)} was trained on the model of {parent}, which {state}"
    return stale_chain(parent, seen | {str(Path(run_dir).resolve())})


def check_base_chain(loaded, run_root) -> None:
    """model.base may name an earlier run, never this run's own directory nor a run that itself descends
    from this one: each `run` would stack another adapter on the last one, or the chain would cycle."""
    from pathlib import Path

    import yaml

    from adaptctl.recipe.loader import field_location
    from adaptctl.core.rundir import is_run_directory

    own = Path(run_root).expanduser().resolve()
    base = Path(loaded.recipe.model.base).expanduser()
    folder = (base if base.is_absolute() else loaded.path.parent / base).resolve()
    chain = []
    while folder not in chain:
        chain.append(folder)
        if folder == own:
            path = " -> ".join(str(f) for f in chain)
            what = "this run's own directory" if len(chain) == 1 else f"a run that starts from this run ({path})"
            raise UserError(f"{field_location(loaded, ('model', 'base'))}: model.base names {what}: {own}",
                            hint="name an earlier run's directory or a base model; a run cannot start from its own model")
        if not is_run_directory(folder):
            return
        try:
            parent = (yaml.safe_load((folder / "recipe.yaml").read_text(encoding="utf-8")) or {})["model"]["base"]
        except (OSError, ValueError, TypeError, KeyError):
            return
        parent = Path(str(parent)).expanduser()
        folder = (parent if parent.is_absolute() else folder / parent).resolve()
