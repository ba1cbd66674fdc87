"""Verify an exported folder: a fresh Python process loads it with plain
Transformers (or peft for an adapter export) and its outputs on a few prepared
examples must equal the trained model's.  Tensors travel as safetensors, never
pickles.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from adaptctl.core.errors import RunFailed
from adaptctl.tasks import all_tasks

OUTPUT_KEYS = tuple(dict.fromkeys(name for spec in all_tasks() for name in spec.output_names))
MAX_POSITIONS = 32   # language-model logits are vocab-wide: compare the first positions only
TOLERANCE = 1e-3
# Relative to max(1, |output|), against the fp32 trained model's outputs.  The reload computes in the saved
# dtype, so its error is the weights' rounding plus that arithmetic's: bf16 keeps 8 significant bits (a
# relative step of 2^-8 = 0.4%), fp16 11 (0.05%).  Measured on SmolLM2-135M (30 layers): see docs/exporting.md.
LOW_PRECISION_TOLERANCE = {"bf16": 5e-2, "fp16": 1e-2}


def tolerance(dtype: str = "fp32") -> float:
    return LOW_PRECISION_TOLERANCE.get(dtype, TOLERANCE)


def _outputs(model, example: dict) -> dict:
    batch = {k: torch.tensor([v]) for k, v in example.items()}
    if getattr(model.config, "is_encoder_decoder", False) and "decoder_input_ids" not in batch:
        batch["decoder_input_ids"] = torch.full((1, 1), model.config.decoder_start_token_id or 0)
    with torch.inference_mode():
        out = model(**batch)
    found = {}
    for key in OUTPUT_KEYS:
        value = getattr(out, key, None)
        if value is not None:
            found[key] = (value[:, :MAX_POSITIONS] if value.dim() == 3 else value).float().contiguous()
    return found


def reference_outputs(model, examples: list[dict]) -> dict:
    outputs = {}
    for i, example in enumerate(examples):
        for key, value in _outputs(model, example).items():
            outputs[f"{i}.{key}"] = value
    return outputs


def verify_in_fresh_process(folder: Path, examples: list[dict], expected: dict, task: str, as_adapter: bool,
                            recipe=None, dtype: str = "fp32") -> float:
    """The child loads `folder` as a user would, trusting its code only if the recipe does; the folder
    (and an adapter's base) is checked here first, so a refusal is a clear error, not a child's traceback."""
    from safetensors.torch import load_file

    from adaptctl.export.fresh_process import run_module
    from adaptctl.models.loading import check_folder_and_base, load_options

    check_folder_and_base(folder, recipe)
    trusted = load_options(recipe)["trust_remote_code"]
    with tempfile.TemporaryDirectory() as scratch:
        inputs, result = Path(scratch) / "examples.json", Path(scratch) / "outputs.safetensors"
        inputs.write_text(json.dumps(examples))
        done = run_module("adaptctl.export.verify", str(folder), task, str(inputs), str(result),
                          "adapter" if as_adapter else "merged", "trust-remote-code" if trusted else "no-remote-code")
        if done.returncode != 0:
            raise RunFailed(f"the exported folder does not reload with plain Transformers:\n{done.stderr[-2000:]}",
                            hint="nothing was written to export/model")
        actual = load_file(str(result))
    return compare(expected, actual, tolerance(dtype))


def compare(expected: dict, actual: dict, allowed: float | None = None) -> float:
    allowed = TOLERANCE if allowed is None else allowed
    worst = 0.0
    for key, value in expected.items():
        if key not in actual or actual[key].shape != value.shape:
            raise RunFailed(f"export verification: output {key} is missing or has another shape after reloading",
                            hint="nothing was written to export/model")
        difference = (actual[key] - value).abs().max().item()
        worst = max(worst, difference)
        if difference > allowed * max(1.0, value.abs().max().item()):
            raise RunFailed(f"export verification failed: reloaded outputs differ from the trained model's "
                            f"(max difference {difference:.3g} on {key})", hint="nothing was written to export/model")
    return worst


def _load_plain(folder: str, task: str, mode: str, code: str = "no-remote-code"):
    """Only Transformers (and peft for adapters): what a user of the folder has, safetensors only and
    its own code only when the recipe trusts it (`code`)."""
    from adaptctl.tasks import get_task

    spec = get_task(task)
    options = {"trust_remote_code": code == "trust-remote-code", "use_safetensors": True}
    if mode == "adapter":
        from adaptctl.models.loading import load_adapter

        return load_adapter(folder, auto_class=spec.auto_class, options=options)
    return spec.model_class().from_pretrained(folder, **options)


def _child(folder: str, task: str, inputs: str, result: str, mode: str, code: str = "no-remote-code"):
    from safetensors.torch import save_file

    model = _load_plain(folder, task, mode, code).eval()
    save_file(reference_outputs(model, json.loads(Path(inputs).read_text())), result)


if __name__ == "__main__":
    _child(*sys.argv[1:7])
