"""Run stages: the stage table, the manifest around each stage, and `adaptctl run`'s skipping of
stages already complete for the same inputs.  It sits above the stages it runs; what a stage is given and
returns is adaptctl/run/context.py.
"""

from __future__ import annotations

import time

from adaptctl.core import console, stop_request
from adaptctl.core.errors import AdaptctlError, Interrupted, RunFailed, UserError
from adaptctl.core.library_output import quiet_libraries
from adaptctl.core.rundir import CannotWrite, RunDir, atomic_write_text, json_hash, now
from adaptctl.recipe.loader import LoadedRecipe
from adaptctl.run import freshness
from adaptctl.run.context import StageContext, StageResult, save_resolved_recipe
from adaptctl.stages import distill, evaluate, export, prepare, train

# The stage table: each stage's module (run(ctx), and inputs(ctx) where it reads more than the recipe).
STAGES = {"prepare": prepare, "train": train, "distill": distill, "evaluate": evaluate, "export": export}
STAGE_INPUTS = {name: module.inputs for name, module in STAGES.items() if hasattr(module, "inputs")}


def context(loaded: LoadedRecipe, run: RunDir, **settings) -> StageContext:
    """A stage context that knows every stage's inputs (for the content keys of later stages)."""
    return StageContext(loaded=loaded, run=run, stage_inputs=STAGE_INPUTS, **settings)


# Stages that one process does for all: the others wait, then read its outputs.
MAIN_PROCESS_ONLY = ("prepare", "evaluate", "export")


def execute(name: str, ctx: StageContext, *, skip_done: bool = False) -> StageResult:
    from adaptctl.core import distributed

    stop_request.raise_if_requested(f"stage {name}")
    quiet_libraries()
    module = STAGES[name]
    parts = freshness.key_parts(name, ctx)
    key = json_hash(parts)
    if skip_done and ctx.run.is_complete(name, key):
        console.info(f"{name}: already complete for these inputs, skipped (--force to redo)")
        manifest = ctx.run.read_manifest(name)
        assert manifest is not None  # is_complete read it
        return _from_manifest(manifest, skipped=True)
    if name in MAIN_PROCESS_ONLY and not distributed.is_main():
        distributed.barrier()
        manifest = ctx.run.read_manifest(name) or {}
        if manifest.get("status") != "complete":
            raise RunFailed(f"{name} failed on rank 0", hint=f"see {ctx.run.manifest_path(name)}")
        return _from_manifest(manifest)
    try:
        return _run_and_record(name, module, parts, ctx, record=distributed.is_main())
    finally:
        if name in MAIN_PROCESS_ONLY:
            distributed.barrier()


def _from_manifest(manifest: dict, skipped: bool = False) -> StageResult:
    return StageResult(outputs=manifest.get("outputs", {}), metrics=manifest.get("metrics", {}), skipped=skipped)


def _run_and_record(name: str, module, parts: dict, ctx: StageContext, record: bool) -> StageResult:
    started, clock, key = now(), time.monotonic(), json_hash(parts)
    # key_parts let a later stage command say which recipe field made these outputs stale
    base = {"key": key, "key_parts": parts, "started_at": started, "recipe": str(ctx.loaded.path)}
    ctx.key, ctx.previous = key, ctx.run.read_manifest(name)
    earlier = _Earlier(ctx, name)
    try:
        # inside the try: a stop that comes as soon as the manifest says running is recorded too
        if record:
            ctx.run.write_manifest(name, status="running", **base)
            save_resolved_recipe(ctx)
        console.info(f"{name}: started ({ctx.run.root})")
        result = module.run(ctx)
    except UserError as exc:
        # Wrong input is found before a stage writes its outputs (they are renamed into place at
        # its end): a completed earlier run's outputs are untouched, so its manifest stays true.
        if record and (isinstance(exc, CannotWrite) or not earlier.restore()):
            _record_failure(ctx, name, "failed", base, exc)
        raise
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, (KeyboardInterrupt, Interrupted)) else "failed"
        if record:
            _record_failure(ctx, name, status, base, exc)
        raise
    if record:
        ctx.run.write_manifest(name, status="complete", **base, finished_at=now(),
                               wall_seconds=round(time.monotonic() - clock, 2),
                               outputs=result.outputs, metrics=result.metrics, **result.manifest)
    console.info(f"{name}: complete in {time.monotonic() - clock:.1f}s")
    return result


class _Earlier:
    """A completed earlier run of the stage: its manifest and the recipe.yaml beside it, put back
    when a re-run fails on its input."""

    def __init__(self, ctx: StageContext, name: str):
        self.ctx, self.name = ctx, name
        complete = (ctx.previous or {}).get("status") == "complete"
        self.manifest = ctx.run.manifest_path(name).read_text() if complete else None
        recipe = ctx.run.root / "recipe.yaml"
        self.recipe = recipe.read_text() if complete and recipe.is_file() else None

    def restore(self) -> bool:
        outputs = (self.ctx.previous or {}).get("outputs") or {}
        if self.manifest is None or not all((self.ctx.run.root / rel).exists() for rel in outputs.values()):
            return False  # never a `complete` manifest over outputs that are no longer all there
        atomic_write_text(self.ctx.run.manifest_path(self.name), self.manifest)
        if self.recipe is not None:
            atomic_write_text(self.ctx.run.root / "recipe.yaml", self.recipe)
        console.warn(f"{self.name}: nothing was changed; the outputs of the earlier complete run are kept")
        return True


def _record_failure(ctx: StageContext, name: str, status: str, base: dict, exc: BaseException):
    try:
        ctx.run.write_manifest(name, status=status, **base, finished_at=now(), error=_describe(exc))
    except (AdaptctlError, OSError):  # a full disk: the stage's own error is the one to report
        pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, AdaptctlError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def summary(stage: str, ctx: StageContext, result: StageResult, status: str = "complete") -> dict:
    return {"stage": stage, "status": status, "run_dir": str(ctx.run.root),
            "outputs": result.outputs, "metrics": result.metrics}


