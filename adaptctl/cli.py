"""The command line: a thin map from command names to functions.

It parses, loads the recipe, calls a stage and maps errors to exit codes
(docs/exit-codes.md).  Nothing here imports torch or transformers, so that
`--help` and `validate` answer fast; stages import them when they run.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer

from adaptctl.core import console
from adaptctl.core.errors import AdaptctlError, UserError
from adaptctl.tasks import TASKS

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Fine-tune and domain-adapt transformer models from one YAML recipe.")
runs_app = typer.Typer(no_args_is_help=True, help="What runs exist, their status and metrics.")
app.add_typer(runs_app, name="runs")

_flags = {"debug": False}

RecipeArg = typer.Argument(..., help="The recipe YAML file.", show_default=False)
# A string, not a Path: Path("") reads as ".", and an empty --run-dir must be refused, not taken as the cwd.
RunDirOpt = typer.Option(None, "--run-dir", help="Run directory (default: runs/<name>); a new or empty folder, or an earlier run's.",
                         metavar="DIR")
SetOpt = typer.Option(None, "--set", help="Override a recipe value: key.path=value (repeatable).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON summary on stdout; logs go to stderr.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="Only errors.")
NprocOpt = typer.Option(1, "--nproc", help="Processes per node, launched with torch.distributed.run (one per device).")
NnodesOpt = typer.Option(None, "--nnodes", help="Machines in a multi-node run (with --nproc).")
NodeRankOpt = typer.Option(None, "--node-rank", help="This machine's rank in a multi-node run.")
MasterAddrOpt = typer.Option(None, "--master-addr", help="Address of the rank-0 machine.")
MasterPortOpt = typer.Option(None, "--master-port", help="Port of the rank-0 machine.")
ThreadsOpt = typer.Option(None, "--threads", min=1, help="CPU threads for torch (overrides train.threads and OMP_NUM_THREADS).")
NoUpstreamOpt = typer.Option(False, "--no-upstream", help="Refuse, instead of preparing the data first, when the "
                             "prepare stage is missing or stale for this recipe.")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for every error.")):
    _flags["debug"] = debug


# ------------------------------------------------------------- helpers
def _context(recipe_path: Path, run_dir: Optional[str], overrides: Optional[List[str]], nproc: int = 1):
    from adaptctl.run.freshness import check_base_chain
    from adaptctl import pipeline
    from adaptctl.recipe.loader import load_recipe
    from adaptctl.core.rundir import RunDir

    loaded = load_recipe(recipe_path, overrides or [])
    root = run_dir if run_dir is not None else Path("runs") / loaded.recipe.name
    check_base_chain(loaded, root)
    return pipeline.context(loaded, RunDir(root), nproc=nproc, overrides=list(overrides or []),
                            run_dir_given=run_dir is not None)


def _emit(payload: dict, as_json: bool):
    if as_json:
        from adaptctl.core.redact import redact

        sys.stdout.write(redact(json.dumps(payload, default=str)) + "\n")
        sys.stdout.flush()


def _run_stages(stages: list[str], ctx, *, skip_done: bool, as_json: bool, label: str, prepare_missing: bool = True,
                threads: int | None = None):
    import contextlib

    from adaptctl import pipeline
    from adaptctl.core import distributed
    from adaptctl.run import freshness
    from adaptctl.run.context import save_resolved_recipe
    from adaptctl.training.hardware import set_threads

    distributed.init(ctx.recipe.train.distributed.timeout_minutes)
    count, source = set_threads(threads or ctx.recipe.train.threads, "--threads" if threads else "train.threads")
    console.info(f"{label}: {count} CPU threads ({source})")
    main_process = distributed.is_main()
    if not main_process:
        console.set_quiet(True)  # one process speaks for the run
    with ctx.run.lock() if main_process else contextlib.nullcontext():
        # Every rank decides from the same files before rank 0 writes any: then the barrier.
        to_run = freshness.with_upstream(stages, ctx, prepare_missing=prepare_missing)
        distributed.barrier()
        # recipe.yaml is written as each stage starts (pipeline), once its inputs resolved
        results = {stage: pipeline.execute(stage, ctx, skip_done=skip_done) for stage in to_run}
        if main_process:
            save_resolved_recipe(ctx)
    if not main_process:
        return
    last = results[stages[-1]]
    metrics = next((r.metrics for s, r in results.items() if s == "evaluate" and s in stages), last.metrics)
    payload = pipeline.summary(label, ctx, last)
    payload["metrics"] = metrics
    api = {use: calls for s in stages for use, calls in (results[s].manifest.get("api") or {}).items()}
    if api:  # the API models' calls made, cached and failed, and their tokens (adaptctl/api/)
        payload["api"] = api
    if len(stages) > 1:
        payload["outputs"] = {s: results[s].outputs for s in stages}
        payload["stages"] = {s: ("skipped" if results[s].skipped else "complete") for s in stages}
    _emit(payload, as_json)
    if not as_json:
        console.info(f"results are in {ctx.run.root}")


def _launch_if_asked(nproc: int, nnodes, node_rank, master_addr, master_port):
    """--nproc N outside a launcher: re-run this command under torch.distributed.run and exit with it."""
    from adaptctl.core import distributed

    if nproc > 1 and distributed.world_size() == 1:
        options = {"nnodes": nnodes, "node_rank": node_rank, "master_addr": master_addr, "master_port": master_port}
        raise SystemExit(distributed.relaunch(nproc, options))


def _stage_command(name: str, help_text: str):
    def command(recipe: Path = RecipeArg, run_dir: Optional[str] = RunDirOpt, set_: Optional[List[str]] = SetOpt,
                as_json: bool = JsonOpt, quiet: bool = QuietOpt, nproc: int = NprocOpt, nnodes: Optional[int] = NnodesOpt,
                node_rank: Optional[int] = NodeRankOpt, master_addr: Optional[str] = MasterAddrOpt,
                master_port: Optional[int] = MasterPortOpt, no_upstream: bool = NoUpstreamOpt,
                threads: Optional[int] = ThreadsOpt):
        console.set_quiet(quiet)
        ctx = _context(recipe, run_dir, set_, nproc)  # a bad recipe fails here, once, before any launch
        _launch_if_asked(nproc, nnodes, node_rank, master_addr, master_port)
        _run_stages([name], ctx, skip_done=False, as_json=as_json, label=name, prepare_missing=not no_upstream,
                    threads=threads)

    command.__doc__ = help_text
    # Typer reads the parameter name `set_` as `--set` through the option's declared name.
    app.command(name)(command)


for _name, _help in {
    "prepare": "Read, split and tokenize the data into RUN_DIR/prepare.",
    "train": "Fine-tune the base model with the recipe's method into RUN_DIR/train.",
    "distill": "Train a smaller student on a teacher's soft targets into RUN_DIR/distill.",
    "evaluate": "Measure the adapted model (and baselines) on a held-out split.",
    "export": "Write a self-contained model folder into RUN_DIR/export/model, verified by reloading.",
}.items():
    _stage_command(_name, _help)


# ------------------------------------------------------------ commands
@app.command()
def run(recipe: Path = RecipeArg, run_dir: Optional[str] = RunDirOpt, set_: Optional[List[str]] = SetOpt,
        as_json: bool = JsonOpt, quiet: bool = QuietOpt,
        force: bool = typer.Option(False, "--force", help="Redo stages that are already complete."),
        stages: Optional[str] = typer.Option(None, "--stages", help="Comma-separated stages to run, in order."),
        nproc: int = NprocOpt, nnodes: Optional[int] = NnodesOpt, node_rank: Optional[int] = NodeRankOpt,
        master_addr: Optional[str] = MasterAddrOpt, master_port: Optional[int] = MasterPortOpt,
        threads: Optional[int] = ThreadsOpt):
    """Every stage the recipe needs, skipping stages already done for the same inputs."""
    from adaptctl.run import freshness
    from adaptctl.core.rundir import STAGES

    console.set_quiet(quiet)
    ctx = _context(recipe, run_dir, set_, nproc)
    chosen = freshness.plan(ctx.recipe)
    if stages:
        chosen = [s.strip() for s in stages.split(",") if s.strip()]
        unknown = [s for s in chosen if s not in STAGES]
        if unknown:
            raise UserError(f"--stages: unknown stage {', '.join(unknown)}", hint=f"choose from {', '.join(STAGES)}")
    _launch_if_asked(nproc, nnodes, node_rank, master_addr, master_port)
    _run_stages(chosen, ctx, skip_done=not force, as_json=as_json, label="run", threads=threads)


@app.command()
def sweep(recipe: Path = RecipeArg, run_dir: Optional[str] = RunDirOpt, set_: Optional[List[str]] = SetOpt,
          as_json: bool = JsonOpt, quiet: bool = QuietOpt, threads: Optional[int] = ThreadsOpt,
          workers: int = typer.Option(1, "--workers", min=1, help="Processes on this machine sharing the study, each taking the next trial."),
          worker_index: int = typer.Option(0, "--worker-index", hidden=True, help="Set by --workers for the extra processes.")):
    """Trials over recipe fields (the recipe's sweep section, Optuna): results.csv, report.md and best.yaml in RUN_DIR/sweep."""
    from adaptctl.sweep import run_sweep, worker_threads
    from adaptctl.training.hardware import set_threads

    console.set_quiet(quiet)
    ctx = _context(recipe, run_dir, set_)
    threads = worker_threads(workers, threads)
    count, source = set_threads(threads or ctx.recipe.train.threads, "--threads" if threads else "train.threads")
    console.info(f"sweep: {count} CPU threads ({source})")
    args = [a for o in (set_ or []) for a in ("--set", o)] + (["--threads", str(threads)] if threads else [])
    _emit(run_sweep(ctx.loaded, ctx.run, workers=workers, worker=worker_index, worker_args=args), as_json)


@app.command()
def plan(recipe: Path = RecipeArg, run_dir: Optional[str] = RunDirOpt, set_: Optional[List[str]] = SetOpt,
         as_json: bool = JsonOpt, quiet: bool = QuietOpt, threads: Optional[int] = ThreadsOpt,
         steps: int = typer.Option(5, "--steps", min=1, help="Training steps to measure (one more warms up, untimed).")):
    """Before a long run: trainable parameters, peak memory per device, steps, tokens and training time,
    from a few measured steps on this machine (prepares the data first, as train would)."""
    from adaptctl.plan import make_plan, summary_lines
    from adaptctl.training.hardware import set_threads

    console.set_quiet(quiet)
    ctx = _context(recipe, run_dir, set_)
    count, source = set_threads(threads or ctx.recipe.train.threads, "--threads" if threads else "train.threads")
    console.info(f"plan: {count} CPU threads ({source})")
    found = make_plan(ctx, steps, say=as_json)
    _emit(found, as_json)
    if not as_json:  # the plan is the command's output: stdout, as --json's object is
        sys.stdout.write("".join(line + "\n" for line in summary_lines(found)))


@app.command()
def validate(recipe: Path = RecipeArg, set_: Optional[List[str]] = SetOpt, as_json: bool = JsonOpt):
    """Check a recipe, and cheaply its data files; every problem with file:line and a hint."""
    from adaptctl.export.gguf_support import export_problems
    from adaptctl.run.freshness import check_base_chain
    from adaptctl.recipe.loader import check_data, load_recipe

    loaded = load_recipe(recipe, set_ or [])
    check_base_chain(loaded, Path("runs") / loaded.recipe.name)  # the run directory `adaptctl run` would use
    check_data(loaded, export_problems(loaded.recipe, loaded.path.parent))
    if loaded.recipe.sweep is not None:  # every trial's recipe, as `adaptctl sweep` checks them first
        from adaptctl.sweep.space import Space

        Space(loaded).check()
    r = loaded.recipe
    if as_json:
        _emit({"valid": True, "name": r.name, "task": r.task, "method": r.method.name,
               "recipe": r.model_dump(mode="json", exclude_none=True)}, True)
    else:
        from adaptctl.core.redact import redact

        decoder = f" (decoder {r.model.decoder})" if r.model.decoder else ""
        console.stderr.print(redact(f"ok: {recipe} — {r.name}: {r.task} with {r.method.name} on {r.model.base}{decoder}"))


@app.command()
def schema():
    """Print the JSON Schema of recipes (for editors and CI)."""
    from adaptctl.recipe.schema import Recipe

    sys.stdout.write(json.dumps(Recipe.model_json_schema(), indent=2) + "\n")


@app.command()
def init(task: str = typer.Option("classification", "--task", help=" | ".join(TASKS))):
    """Print a commented starter recipe for a task."""
    from adaptctl.recipe.starter import starter_recipe

    sys.stdout.write(starter_recipe(task))


@app.command()
def models(as_json: bool = JsonOpt):
    """Which base models resolve offline, and from where."""
    from adaptctl.models.resolve import list_models

    found = list_models()
    if as_json:
        _emit({"models": [{"name": m.name, "source": m.source, "path": str(m.path)} for m in found]}, True)
        return
    from rich.table import Table

    table = Table("model", "source", "path")
    for m in found:
        table.add_row(m.name, m.source, str(m.path))
    from rich.console import Console

    Console(width=200).print(table)


@app.command()
def predict(model_dir: Path = typer.Argument(..., help="An exported model folder, a run directory, or a model.onnx file."),
            input: str = typer.Option(..., "--input", help="A .jsonl, .csv or .txt file, or - for stdin. Rows with the recipe's fields are rendered through its templates."),
            output: Optional[Path] = typer.Option(None, "--output", help="Where to write JSON lines (default stdout): a new file, a pipe or a device; an existing file only with --overwrite."),
            overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output file."),
            text_column: Optional[str] = typer.Option(None, "--text-column", help="Take this field as the input as it is (default: prompt or text, else the recipe's template)."),
            batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Inputs per batch (default: the run's evaluate.batch_size)."),
            onnx: bool = typer.Option(False, "--onnx", help="Run the folder's model.onnx (exported with onnx in export.formats) with onnxruntime."),
            max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Longest answer (default: the run's evaluate.generation.max_new_tokens)."),
            num_beams: Optional[int] = typer.Option(None, "--num-beams", help="Beam search width (default: the run's)."),
            do_sample: Optional[bool] = typer.Option(None, "--do-sample/--no-sample", help="Sample instead of greedy/beam decoding (default: the run's)."),
            temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature, with sampling (default: the run's)."),
            explain: bool = typer.Option(False, "--explain", help="Add token attributions towards each predicted class (classification; Captum's integrated gradients)."),
            pii: Optional[str] = typer.Option(None, "--pii", help="Generated text: report, redact or refuse personal data in it (default: the run's data.pii.action)."),
            threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: the run's train.threads, else OMP_NUM_THREADS or one per core)."),
            quiet: bool = QuietOpt):
    """Batched inference with an exported model, one JSON line per input, as the run prepared and evaluated."""
    console.set_quiet(quiet)
    from adaptctl.predict import predict as run_predict

    decoding = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": do_sample,
                "temperature": temperature}
    run_predict(model_dir, input, output, text_column, batch_size, onnx, decoding, explain, pii, threads,
                overwrite=overwrite)


@app.command()
def serve(model_dir: Path = typer.Argument(..., help="A run directory or an exported model folder."),
          host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on (default: this machine only)."),
          port: int = typer.Option(8000, "--port", help="The port; 0 takes a free one (the URL is printed)."),
          api_key_env: Optional[str] = typer.Option(None, "--api-key-env", metavar="NAME", help="Require 'Authorization: Bearer <key>' on every request, the key read from the environment variable NAME."),
          served_model_name: Optional[str] = typer.Option(None, "--served-model-name", help="The model name clients use (default: the run's name)."),
          batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Rows per batch (default: the run's evaluate.batch_size)."),
          max_wait_ms: float = typer.Option(10.0, "--max-wait-ms", help="How long a request waits for others to share its batch."),
          max_tokens: int = typer.Option(1024, "--max-tokens", help="The most tokens a request may ask to generate."),
          max_request_bytes: int = typer.Option(1 << 20, "--max-request-bytes", help="The largest request body accepted."),
          engine: str = typer.Option("adaptctl", "--engine", help="adaptctl (this process) or vllm (vLLM's own OpenAI server, when installed)."),
          enable_lora: bool = typer.Option(False, "--enable-lora", help="With --engine vllm: serve the base model plus the run's LoRA adapter."),
          pii: Optional[str] = typer.Option(None, "--pii", help="Generated text: report, redact or withhold (refuse) personal data in answers (default: the run's data.pii.action)."),
          threads: Optional[int] = ThreadsOpt, as_json: bool = JsonOpt, quiet: bool = QuietOpt):
    """An OpenAI-compatible HTTP API (chat/completions, completions, /classify) answering exactly as predict does."""
    console.set_quiet(quiet)
    from adaptctl.serve.options import ServeOptions
    from adaptctl.serve.server import serve as run_server

    run_server(model_dir, ServeOptions(
        host=host, port=port, api_key_env=api_key_env, served_model_name=served_model_name, batch_size=batch_size,
        max_wait_ms=max_wait_ms, max_tokens=max_tokens, max_request_bytes=max_request_bytes, threads=threads,
        engine=engine, enable_lora=enable_lora, as_json=as_json, pii=pii))


@runs_app.command("list")
def runs_list(root: Path = typer.Argument(Path("runs"), help="Folder that holds run directories."), as_json: bool = JsonOpt):
    """Every run under ROOT with its stages' status and headline metrics."""
    from adaptctl.run.runs import list_runs

    list_runs(root, as_json)


@runs_app.command("show")
def runs_show(run_dir: Path = typer.Argument(..., help="A run directory."), as_json: bool = JsonOpt):
    """One run's stages, status, timings and metrics."""
    from adaptctl.run.runs import show_run

    show_run(run_dir, as_json)


@runs_app.command("compare")
def runs_compare(run_dirs: List[Path] = typer.Argument(..., help="Run directories to compare."), as_json: bool = JsonOpt,
                 diff: bool = typer.Option(False, "--diff", help="Also list the recipe fields that differ between the runs.")):
    """One table of the evaluate metrics of several runs, with task, split, example count and baseline."""
    from adaptctl.run.runs import compare_runs

    compare_runs(run_dirs, as_json, diff)


# ------------------------------------------------------------- entry
def _stop_on_signal(signum, frame):
    # SIGTERM (a batch queue's stop, `kill`) outside the training steps, which save a checkpoint
    # first (training/callbacks.py): the same clean stop as Ctrl-C. Manifests say "interrupted",
    # temporary folders are removed on the way out, child processes are ended, exit 130.
    # Remembered too, in case a library swallows the KeyboardInterrupt (core/stop_request.py).
    import signal

    from adaptctl.core import stop_request

    stop_request.request(signal.Signals(signum).name)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    from adaptctl.core import stop_request

    stop_request.clear()
    in_main_thread = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, _stop_on_signal) for sig in signals} if in_main_thread else {}
    try:
        return _main(argv)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None) -> int:
    """Run the command; with --json, every failure is one JSON object on stdout as well."""
    wants_json = "--json" in (sys.argv[1:] if argv is None else argv)
    code, error, hint = _dispatch(argv)
    if wants_json and code != 0:
        status = "interrupted" if code == 130 else "failed"
        _emit({"status": status, "error": error, "hint": hint, "exit_code": code}, True)
    return code


def _dispatch(argv: list[str] | None) -> tuple[int, str | None, str | None]:
    """(exit code, error message, hint) of running the command."""
    from typer.exceptions import TyperException

    try:
        result = app(args=argv, standalone_mode=False, prog_name="adaptctl")
        return (result if isinstance(result, int) else 0), None, None
    except typer.Exit as exc:
        if getattr(exc, "exit_code", 0) != 130:
            return getattr(exc, "exit_code", 0), None, None
        # typer turns Ctrl-C (and so SIGTERM, see _stop_on_signal) into Exit(130): say it like any interrupt
        console.error("interrupted")
        return 130, "interrupted", "run the same command again to resume"
    except (typer.Abort, KeyboardInterrupt):
        console.error("interrupted")
        return 130, "interrupted", "run the same command again to resume"
    except TyperException as exc:  # usage errors: unknown command, bad option
        exc.show()
        return getattr(exc, "exit_code", 2), exc.format_message() if hasattr(exc, "format_message") else str(exc), None
    except AdaptctlError as exc:
        if _flags["debug"]:
            traceback.print_exc()
        console.error(exc.render())
        return exc.exit_code, "\n".join([exc.message, *exc.details]), exc.hint
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        return code, None if code == 0 else f"exited with {code}", None
    except Exception as exc:  # a bug in adaptctl, not the user's input: keep the traceback (secrets redacted)
        from adaptctl.core.redact import redact
        from adaptctl.core.rundir import disk_failure

        if (full := disk_failure(exc)) is not None:  # a full or read-only disk under a library's own error
            console.error(full.render())
            return full.exit_code, full.message, full.hint

        sys.stderr.write(redact(traceback.format_exc()))
        console.error("adaptctl failed unexpectedly (a bug); the traceback is above")
        return 3, f"adaptctl failed unexpectedly: {type(exc).__name__}: {exc}", "this is a bug; please report it with the traceback"
