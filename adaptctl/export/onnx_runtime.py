"""Run an exported model.onnx with onnxruntime: the fresh-process check of the
export stage (`python -m adaptctl.export.onnx_runtime`) and `adaptctl predict --onnx`.

Nothing here imports torch at module level: the check runs the file the way a
user without PyTorch would, with onnxruntime and numpy only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ONNX_FILE = "model.onnx"
PER_TOKEN = ("start_logits", "end_logits")   # one value per position: cut back to each example's length


def session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings about unused initializers mean nothing to a user
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess, inputs: dict) -> dict:
    """numpy int64 inputs -> {output name: numpy array}. Inputs the graph does not take are left out;
    token_type_ids the graph takes but the tokenizer did not give are zeros, as in the PyTorch model."""
    import numpy as np

    shape = inputs["input_ids"].shape
    feeds = {i.name: np.asarray(inputs[i.name], dtype=np.int64) if i.name in inputs else np.zeros(shape, np.int64)
             for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def pad(examples: list[dict], pad_id: int) -> dict:
    """Unpadded token lists -> one right-padded batch of int64 arrays (attention_mask 0 on the padding)."""
    import numpy as np

    width = max(len(e["input_ids"]) for e in examples)
    batch = {}
    for key in examples[0]:
        fill = pad_id if key == "input_ids" else 0
        batch[key] = np.array([list(e[key]) + [fill] * (width - len(e[key])) for e in examples], dtype=np.int64)
    if "attention_mask" not in batch:
        batch["attention_mask"] = np.array([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"]))
                                            for e in examples], dtype=np.int64)
    return batch


class OnnxModel:
    """The two things classification's `predict` uses of a PyTorch model, `model(**batch).logits` and
    `model.config.id2label`, over an onnxruntime session, so that both paths share one predict."""

    def __init__(self, path: Path, config):
        from adaptctl.core.errors import UserError

        self.path, self.config = Path(path), config
        try:
            self.session = session(path)
        except Exception as exc:  # onnxruntime's own error types: a damaged file, or no ONNX model at all
            raise UserError(f"{path} is not an ONNX model onnxruntime can load: {_first_line(exc)}",
                            hint="export the model again with export.formats: [onnx], or drop --onnx") from None

    def __call__(self, **batch):
        import types

        import torch

        from adaptctl.core.errors import UserError

        try:
            outputs = run(self.session, {k: v.cpu().numpy() for k, v in batch.items()})
        except Exception as exc:  # a graph of another model: other inputs, other shapes
            raise UserError(f"{self.path} does not run on this model's inputs: {_first_line(exc)}",
                            hint="use the model.onnx exported beside this folder's tokenizer and config") from None
        return types.SimpleNamespace(**{k: torch.from_numpy(v) for k, v in outputs.items()})

    def to(self, _device):
        return self  # onnxruntime runs on the CPU here; the batches are moved back by __call__

    def eval(self):
        return self


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def per_example_outputs(path: Path, examples: list[dict], pad_id: int) -> dict:
    """All examples in one padded batch (dynamic batch and sequence axes exercised), each output then cut
    back to its example's own length: {"i.name": array of shape [1, ...]}, as verify.reference_outputs."""
    outputs = run(session(path), pad(examples, pad_id))
    found = {}
    for i, example in enumerate(examples):
        length = len(example["input_ids"])
        for name, value in outputs.items():
            row = value[i:i + 1]
            found[f"{i}.{name}"] = (row[:, :length] if name in PER_TOKEN else row).copy()
    return found


def _child(path: str, inputs: str, result: str, pad_id: str):
    from safetensors.numpy import save_file

    examples = json.loads(Path(inputs).read_text())
    save_file(per_example_outputs(Path(path), examples, int(pad_id)), result)


if __name__ == "__main__":
    _child(*sys.argv[1:5])
