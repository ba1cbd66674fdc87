"""`export.formats: [onnx]`: write model.onnx beside the safetensors (classification and
extractive-QA encoders) and check it in a fresh process with onnxruntime against the
PyTorch model on the examples export already verifies with.

Exporter: torch's TorchScript-based exporter (`dynamo=False`), not the default
torch.export-based one.  Both give the same graph outputs for these models (max
difference ~1e-8 on a tiny BERT, dynamic batch and sequence both ways), but the
dynamo exporter needs two more packages (onnxscript, onnx-ir) and took 15.8 s
against 3.3-4.8 s for the same tiny BERT on this 2-core CPU.  Encoder classifiers
and QA heads have no data-dependent control flow, which is what torch.export is
for; the legacy exporter traces them faithfully (the tracer's warnings about
Python conditions on shapes are about branches transformers 5 takes the same way
for every shape; the check runs the file on a batch of other shapes to confirm it).
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path

from adaptctl.core.errors import RunFailed, UserError
from adaptctl.export.onnx_runtime import ONNX_FILE

# 17 has LayerNormalization as one op and is read by every onnxruntime since 1.14 (2023);
# nothing these models use needs a newer opset.
OPSET = 17
MAX_BYTES = 2 * 1024**3   # protobuf's limit on one .onnx file; larger weights would need external data files
TOLERANCE = 1e-3          # as verify.TOLERANCE: scaled by the outputs' magnitude where it exceeds 1
FAILED_HINT = "nothing was written to export/model; set export.formats: [] to ship safetensors only"


def export_onnx(model, outputs: tuple[str, ...], examples: list[dict], folder: Path, pad_id: int) -> dict:
    """Write folder/model.onnx with dynamic batch and sequence axes -> {"file", "opset", "seconds"};
    `outputs`: the names of the model outputs it returns (the task spec's output_names)."""
    import onnx
    import torch

    from adaptctl.export.onnx_runtime import pad

    batch = pad(examples[:2], pad_id)   # a padded batch: the trace sees a real attention mask
    names = list(batch)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes.update({name: {0: "batch"} if name == "logits" else {0: "batch", 1: "sequence"} for name in outputs})
    path, start = folder / ONNX_FILE, time.monotonic()
    device = next(model.parameters()).device
    with warnings.catch_warnings(), torch.no_grad():
        # The deprecation notice and tracer warnings are about the exporter, not anything a user can change.
        warnings.simplefilter("ignore")
        torch.onnx.export(_traceable(model, names, outputs).eval(), tuple(torch.from_numpy(batch[n]).to(device) for n in names),
                          str(path), input_names=names, output_names=list(outputs), dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    onnx.checker.check_model(str(path))  # a valid ONNX model for any runtime, not only onnxruntime
    path.chmod(0o644)
    return {"file": ONNX_FILE, "opset": OPSET, "seconds": round(time.monotonic() - start, 2)}


def _traceable(model, names: list[str], outputs: tuple[str, ...]):
    """The model with positional tensor inputs and a plain tuple of the task's outputs: what the exporter
    traces, so the graph has exactly these named inputs and outputs (no loss, no hidden states)."""
    import torch

    class Outputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            out = self.model(**dict(zip(names, tensors)))
            return tuple(getattr(out, name) for name in outputs)

    return Outputs()


def refuse_too_large(model):
    """Before anything is written: weights over protobuf's limit cannot go into one .onnx file."""
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if size > MAX_BYTES:
        raise UserError(f"export.formats: onnx: the model's weights are {size / 1024**3:.1f} GB, over the 2 GB "
                        "that one .onnx file can hold", hint="remove onnx from export.formats")


def verify_onnx(path: Path, examples: list[dict], expected: dict, pad_id: int) -> dict:
    """onnxruntime in a fresh process against the PyTorch outputs -> the manifest's numbers; RunFailed beyond
    tolerance.  `expected` is verify.reference_outputs: each example alone, unpadded."""
    actual, seconds = _run_in_fresh_process(path, examples, pad_id)
    worst = 0.0
    for key, value in expected.items():
        if key not in actual or tuple(actual[key].shape) != tuple(value.shape):
            raise RunFailed(f"ONNX verification: output {key} is missing or has another shape in onnxruntime",
                            hint=FAILED_HINT)
        difference = float(abs(actual[key] - value.numpy()).max())
        worst = max(worst, difference)
        if difference > TOLERANCE * max(1.0, value.abs().max().item()):
            raise RunFailed(f"ONNX verification failed: onnxruntime's outputs differ from the PyTorch model's "
                            f"(max difference {difference:.3g} on {key})", hint=FAILED_HINT)
    identical = all(int(actual[key].argmax()) == int(value.argmax()) for key, value in expected.items())
    return {"max_abs_diff": worst, "labels_identical": identical, "examples": len(examples),
            "check_seconds": round(seconds, 2)}


def _run_in_fresh_process(path: Path, examples: list[dict], pad_id: int) -> tuple[dict, float]:
    from safetensors.numpy import load_file

    from adaptctl.export.fresh_process import run_module

    with tempfile.TemporaryDirectory() as scratch:
        inputs, result = Path(scratch) / "examples.json", Path(scratch) / "outputs.safetensors"
        inputs.write_text(json.dumps(examples))
        start = time.monotonic()
        done = run_module("adaptctl.export.onnx_runtime", str(path), str(inputs), str(result), str(pad_id))
        if done.returncode != 0:
            raise RunFailed(f"the exported model.onnx does not run in onnxruntime:\n{done.stderr[-2000:]}",
                            hint=FAILED_HINT)
        seconds = time.monotonic() - start
        return load_file(str(result)), seconds
