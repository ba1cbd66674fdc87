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
    if (path / "config.json").exists() or (path / "adapter_config.json").exists():
        return path
    for candidate in (path / "export" / "model", path / "distill" / "model", path / "train" / "model"):
        if candidate.exists():
            return candidate
    raise UserError(f"no model in {path}", hint="pass an exported model folder or a run directory with export/model")


def read_inputs(source: str, column: str | None) -> list[dict]:
    if source == "-":
        text, name = sys.stdin.read(), "stdin"
    else:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"--input: no file at {path}", hint="a .jsonl, .csv or .txt file, or - for stdin")
        text, name = path.read_text(encoding="utf-8"), path.name
    if name.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(text)))
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if name.endswith(".jsonl") or (name == "stdin" and line.lstrip().startswith("{")):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{name}:{number}: not valid JSON ({exc.msg})", hint="one JSON object per line") from None
        else:
            rows.append({column or "text": line})
    return rows


def _texts(rows: list[dict], column: str, name: str) -> list[str]:
    missing = [i for i, row in enumerate(rows, 1) if column not in row]
    if missing:
        raise UserError(f"{name}: row {missing[0]} has no '{column}' field", hint="choose the field with --text-column")
    return [str(row[column]) for row in rows]


def predict(model_dir: Path, source: str, output: Path | None, column: str | None, batch_size: int):
    from adaptctl.loading import read_info
    from adaptctl.pipeline import quiet_libraries

    quiet_libraries()
    folder = model_folder(model_dir)
    info = read_info(folder)
    task = info.get("task") or _task_from_config(folder)
    rows = read_inputs(source, column)
    if not rows:
        raise UserError(f"--input {source}: no rows", hint="give at least one input")
    column = column or ("text" if task == "classification" else "prompt" if "prompt" in rows[0] else "text")
    texts = _texts(rows, column, source)
    console.info(f"predict: {len(texts)} inputs with {folder} ({task})")
    results = _run(task, folder, texts, info, batch_size)
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


def _run(task: str, folder: Path, texts: list[str], info: dict, batch_size: int) -> list[dict]:
    from transformers import AutoTokenizer

    from adaptctl.tasks import get_task

    module = get_task(task)
    if not hasattr(module, "predict"):
        raise UserError(f"predict does not support task {task} yet", hint="use adaptctl evaluate")
    from adaptctl.loading import check_folder_and_base, tokenizer_options

    # predict has no recipe to trust a folder with: custom code and pickle weights are refused here,
    # before transformers could ask on stdin (where `yes y |` would answer for the user).
    check_folder_and_base(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), **tokenizer_options())
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
