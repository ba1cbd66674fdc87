"""`adaptctl serve --engine vllm`: the same folder handed to vLLM's own OpenAI server (`vllm serve`), for
GPU servers.  adaptctl finds the model as predict does, builds vLLM's command line, and replaces itself
with vLLM (exec), so that signals, logs and the exit code are vLLM's own.

What travels: the merged export (or, with --enable-lora, the base model plus the LoRA adapter through
vLLM's --enable-lora/--lora-modules), the served name, host and port, the API key (as VLLM_API_KEY in
vLLM's environment, never on its command line), a chat template the recipe wrote out as a string, and
the run's evaluate.generation as vLLM's default sampling settings.  What does not: the run's plain
data.prompt template (vLLM completes prompts as they are sent), the retrieval of a knowledge-base run
(data.retrieval) and a classifier's calibration temperature (vLLM's probabilities are uncalibrated); each
is said at start.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

from adaptctl.core import console
from adaptctl.core.errors import UserError

# vLLM's accepted --max-lora-rank values
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def hand_to_vllm(model_dir: Path, options):
    if importlib.util.find_spec("vllm") is None:
        raise UserError("--engine vllm: vLLM is not installed in this environment",
                        hint="install it on a machine with a CUDA GPU (pip install 'adaptctl[gpu]'), or leave out "
                             "--engine to serve with adaptctl's own engine")
    from adaptctl.predict import Predictor

    predictor = Predictor.resolve(model_dir)
    name = options.model_names(predictor, model_dir)[0]
    command = [*_vllm_program(), *vllm_arguments(predictor, name, options)]
    for warning in untravelled(predictor):
        console.warn(f"serve --engine vllm: {warning}")
    environment = dict(os.environ)
    if options.api_key_env:
        environment["VLLM_API_KEY"] = options.api_key()
    console.info(f"serve: handing {predictor.folder} to vLLM: {' '.join(command)}")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, environment)


def vllm_arguments(predictor, name: str, options) -> list[str]:
    """`vllm serve`'s arguments for the predictor's folder (the merged model, or base + LoRA adapter)."""
    if options.port == 0:
        raise UserError("--engine vllm needs a port number (vLLM does not pick a free one)", hint="e.g. --port 8000")
    folder = predictor.folder
    is_adapter = (folder / "adapter_config.json").is_file()
    if is_adapter and not options.enable_lora:
        raise UserError(f"{folder} is an adapter, and vLLM serves merged models (or a base plus a LoRA adapter)",
                        hint="export merged (export.merge_adapter: true, the default) and serve the run's export/model, "
                             "or add --enable-lora")
    if options.enable_lora:
        model, extra = _lora(folder, name)
    else:
        model, extra = str(folder), ["--served-model-name", name]
    arguments = ["serve", model, *extra, "--host", options.host, "--port", str(options.port)]
    if isinstance(predictor.recipe.data.chat_template, str):  # a template the recipe wrote, not the tokenizer's own
        arguments += ["--chat-template", predictor.recipe.data.chat_template]
    if predictor.spec.generates:
        arguments += ["--override-generation-config", json.dumps(_generation_defaults(predictor.recipe))]
    return arguments


def untravelled(predictor) -> list[str]:
    """What adaptctl's engine applies that vLLM will not."""
    from adaptctl.retrieval.shipped import retrieval_folder

    found = []
    data = predictor.recipe.data
    if predictor.spec.generates and data.prompt and not data.chat_template:
        found.append(f"the run's prompt template ({data.prompt!r}) is not applied by vLLM: send prompts to "
                     "/v1/completions as the template renders them")
    if retrieval_folder(predictor.model_dir, predictor.folder) is not None:
        found.append("vLLM does not retrieve: this run answers from its knowledge base (data.retrieval), and vLLM "
                     "answers each request as it is sent; adaptctl's engine retrieves as predict does")
    if predictor.info.get("temperature"):
        found.append(f"vLLM's /classify probabilities leave out this run's calibration temperature "
                     f"({predictor.info['temperature']:.3f}); adaptctl's engine applies it")
    return found


def _lora(folder: Path, name: str) -> tuple[str, list[str]]:
    from adaptctl.models.loading import adapter_base, check_loadable
    from adaptctl.core.rundir import read_json_object

    config = read_json_object(folder / "adapter_config.json")
    if config.get("peft_type") != "LORA" or config.get("use_dora"):
        kind = "DoRA" if config.get("use_dora") else config.get("peft_type")
        raise UserError(f"--enable-lora: {folder} is a {kind} adapter, and vLLM serves LoRA adapters only",
                        hint="export merged (export.merge_adapter: true) and serve the run's export/model")
    base = adapter_base(folder)
    check_loadable(base)
    rank = int(config.get("r") or 8)
    max_rank = next((r for r in LORA_RANKS if r >= rank), rank)
    return str(base), ["--enable-lora", "--lora-modules", f"{name}={folder}", "--max-lora-rank", str(max_rank)]


def _generation_defaults(recipe) -> dict:
    """evaluate.generation as vLLM's default sampling settings (temperature 0 is vLLM's greedy)."""
    generation = recipe.evaluate.generation
    return {"max_new_tokens": generation.max_new_tokens,
            "temperature": generation.temperature if generation.do_sample else 0.0}


def _vllm_program() -> list[str]:
    beside = Path(sys.executable).with_name("vllm")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("vllm")
    return [found] if found else [sys.executable, "-m", "vllm.entrypoints.cli.main"]
