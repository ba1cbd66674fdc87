"""`adaptctl predict`: batched inference with an exported (or trained) model,
one JSON line per input."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from adaptctl import console
from adaptctl.errors import UserError
from adaptctl.redact import redact
from adaptctl.rundir import atomic_write_text


def model_folder(path: Path) -> Path:
    """An exported model folder, or a run directory's export (else train) model."""
    path = Path(path)
    if path.suffix == ".onnx":
        return path.parent  # the export folder it sits in holds its tokenizer and label names
    if (path / "config.json").exists() or (path / "adapter_config.json").exists():
        return path
    for candidate in (path / "export" / "model", path / "distill" / "model", path / "train" / "model"):
        if candidate.exists():
            return candidate
    raise UserError(f"no model in {path}", hint="pass an exported model folder or a run directory with export/model")


def read_inputs(source: str, column: str | None) -> list[dict]:
    """The input rows, each with the line it came from under "__line__" (for messages)."""
    text, name = _read_text(source)
    if name.endswith(".csv"):
        return _csv_rows(text, name)
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if name.endswith(".jsonl") or (name == "stdin" and line.lstrip().startswith("{")):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{name}:{number}: not valid JSON ({exc.msg})", hint="one JSON object per line") from None
            if not isinstance(row, dict):
                raise UserError(f"{name}:{number}: a JSON {type(row).__name__}, not an object",
                                hint='one JSON object per line, such as {"text": "..."}')
            rows.append({**row, "__line__": number})
        else:
            rows.append({column or "text": line, "__line__": number})
    return rows


def _read_text(source: str) -> tuple[str, str]:
    """The input decoded as UTF-8, and its name; bytes first, so that a bad byte has a line."""
    from adaptctl.data.readers import cannot_read

    if source == "-":
        stdin = getattr(sys.stdin, "buffer", None)
        if stdin is None:  # a text stream with no bytes under it (a test's stand-in): already decoded
            return sys.stdin.read(), "stdin"
        data, name = stdin.read(), "stdin"
    else:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"--input: no file at {path}", hint="a .jsonl, .csv or .txt file, or - for stdin")
        try:
            data, name = path.read_bytes(), path.name
        except OSError as exc:
            raise cannot_read(path, exc) from None
    try:
        return data.decode("utf-8"), name
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{name}:{line}: not valid UTF-8", hint="save the input as UTF-8, e.g. iconv -f latin1 -t utf-8") from None


def _csv_rows(text: str, name: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        return [{**row, "__line__": reader.line_num} for row in reader]
    except csv.Error as exc:  # a NUL byte, a field over csv's size limit
        raise UserError(f"{name}:{reader.line_num}: {exc}", hint="a CSV file with a header line") from None


def _texts(rows: list[dict], column: str, name: str) -> list[str]:
    """The inputs as text: a missing, empty-cell or nested value is refused, not predicted on as 'None'."""
    for i, row in enumerate(rows, 1):
        where = f"{name}:{row.get('__line__', i)}"
        value = row.get(column)
        if column not in row or value is None:
            raise UserError(f"{where}: no '{column}' field", hint="choose the field with --text-column")
        if isinstance(value, (dict, list)):
            raise UserError(f"{where}: '{column}' holds a JSON {type(value).__name__}, not text",
                            hint="give each input as a string, or choose another field with --text-column")
    return [str(row[column]) for row in rows]


def onnx_file(model_dir: Path, folder: Path, asked: bool) -> Path | None:
    """The .onnx file to run: MODEL_DIR itself when it is one, else the folder's model.onnx with --onnx."""
    from adaptctl.export.onnx_runtime import ONNX_FILE

    model_dir = Path(model_dir)
    if model_dir.suffix == ".onnx":
        if not model_dir.is_file():
            raise UserError(f"no ONNX file at {model_dir}", hint="export with export.formats: [onnx]")
        return model_dir
    if not asked:
        return None
    if not (folder / ONNX_FILE).is_file():
        raise UserError(f"--onnx: {folder} has no {ONNX_FILE}",
                        hint="export with export.formats: [onnx] (adaptctl export RECIPE --set 'export.formats=[onnx]')")
    return folder / ONNX_FILE


def _check_options(output: Path | None, batch_size: int):
    """Checked before the model loads (seconds) and before anything is written."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {batch_size}", hint="e.g. --batch-size 32")
    if output is not None and Path(output).is_dir():
        raise UserError(f"--output {output} is a folder", hint=f"name a file, e.g. --output {Path(output) / 'predictions.jsonl'}")


def _label_map(model_dir: Path, folder: Path, info: dict) -> dict:
    """Label names: adaptctl.json's, else the run's prepare/labels.json.  A run's train/model may be an
    adapter whose base config says nothing of the labels (it would print LABEL_0, LABEL_1)."""
    if info.get("label2id"):
        return info["label2id"]
    for run_dir in (Path(model_dir), folder.parent.parent):
        labels = run_dir / "prepare" / "labels.json"
        if labels.is_file():
            return json.loads(labels.read_text()).get("label2id") or {}
    return {}


def predict(model_dir: Path, source: str, output: Path | None, column: str | None, batch_size: int,
            use_onnx: bool = False):
    from adaptctl.loading import read_info
    from adaptctl.pipeline import quiet_libraries

    _check_options(output, batch_size)
    quiet_libraries()
    folder = model_folder(model_dir)
    onnx = onnx_file(model_dir, folder, use_onnx)
    info = read_info(folder)
    task = info.get("task") or _task_from_config(folder)
    if task == "classification":
        info = {**info, "label2id": _label_map(model_dir, folder, info)}
    rows = read_inputs(source, column)
    if not rows:
        raise UserError(f"--input {source}: no rows", hint="give at least one input")
    column = column or ("text" if task == "classification" else "prompt" if "prompt" in rows[0] else "text")
    texts = _texts(rows, column, source)
    console.info(f"predict: {len(texts)} inputs with {onnx or folder} ({task}{', onnxruntime' if onnx else ''})")
    results = _run(task, folder, texts, info, batch_size, onnx)
    lines = "".join(json.dumps({"input": t, **r}, ensure_ascii=False) + "\n" for t, r in zip(texts, results))
    if output is None:
        sys.stdout.write(redact(lines))  # a file goes through atomic_write_text, which redacts too
    else:
        atomic_write_text(output, lines)
        console.info(f"predict: wrote {output}")


def _task_from_config(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    arch = " ".join(config.get("architectures", []))
    for marker, task in (("SequenceClassification", "classification"), ("QuestionAnswering", "extractive-qa"),
                         ("ConditionalGeneration", "seq2seq"), ("CausalLM", "causal-lm")):
        if marker in arch:
            return task
    raise UserError(f"cannot tell the task of {folder}", hint="export it with adaptctl, which records the task")


def _run(task: str, folder: Path, texts: list[str], info: dict, batch_size: int, onnx: Path | None) -> list[dict]:
    from transformers import AutoConfig, AutoTokenizer

    from adaptctl.tasks import get_task

    module = get_task(task)
    if not hasattr(module, "predict"):
        raise UserError(f"predict does not support task {task} yet", hint="use adaptctl evaluate")
    from adaptctl.loading import check_folder_and_base, tokenizer_options

    # predict has no recipe to trust a folder with: custom code and pickle weights are refused here,
    # before transformers could ask on stdin (where `yes y |` would answer for the user).
    check_folder_and_base(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), **tokenizer_options())
    if onnx is not None:  # the task's own predict over onnxruntime: the same batching, the same JSON lines
        from adaptctl.export.onnx_runtime import OnnxModel

        model = OnnxModel(onnx, AutoConfig.from_pretrained(str(folder), trust_remote_code=False))
    else:
        model = _load(folder, module)
    return module.predict(model, tokenizer, texts, info, batch_size)


def _load(folder: Path, module):
    from adaptctl.evaluation.inference import device
    from adaptctl.loading import load_options

    if (folder / "adapter_config.json").exists():
        from adaptctl.methods.peft_methods import load_adapter

        model = load_adapter(folder, auto_class=module.model_class().__name__, options=load_options())
    else:
        model = module.model_class().from_pretrained(str(folder), **load_options())
    return model.to(device()).eval()
