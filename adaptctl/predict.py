"""`adaptctl predict`: batched inference with an exported (or trained) model, its inputs rendered,
encoded and decoded as the run prepared and evaluated its data (adaptctl/recipe/inference.py),
one JSON line per input."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptctl.core import console, outputs
from adaptctl.data import input_rows
from adaptctl.data.input_rows import LINE, input_file
from adaptctl.core.errors import UserError
from adaptctl.core.redact import redact
from adaptctl.core.rundir import read_json_object, run_model_folder
from adaptctl.tasks import all_tasks, get_task

if TYPE_CHECKING:
    from adaptctl.recipe.inference import InferenceRecipe


def model_folder(path: Path) -> Path:
    """An exported model folder, or a run directory's model (rundir.run_model_folder: the first complete
    of export, distill and train)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return path.parent  # the export folder it sits in holds its tokenizer and label names
    if (path / "config.json").exists() or (path / "adapter_config.json").exists():
        return path
    found = run_model_folder(path)
    if found is not None:
        return found[0]
    raise UserError(f"no model in {path}", hint="pass an exported model folder or a run directory with export/model")


# The data fields whose input is a conversation, a JSON list of messages rather than text (tasks/conversation.py).
CONVERSATION_FIELDS = ("messages", "conversations")


def _texts(rows: list[dict], column: str, name: str, structured: bool = False) -> list[str]:
    """The inputs as text: a missing, empty-cell or nested value is refused, not predicted on as 'None';
    with `structured` (a conversation column) a JSON list is passed on as JSON text."""
    for i, row in enumerate(rows, 1):
        where = f"{name}:{row.get(LINE, i)}"
        value = row.get(column)
        if column not in row or value is None:
            raise UserError(f"{where}: no '{column}' field", hint="choose the field with --text-column")
        if isinstance(value, list) and structured:
            continue  # a conversation: the task reads the JSON list
        if isinstance(value, (dict, list)):
            raise UserError(f"{where}: '{column}' holds a JSON {type(value).__name__}, not text",
                            hint="give each input as a string, or choose another field with --text-column")
    return [json.dumps(row[column]) if isinstance(row[column], list) else str(row[column]) for row in rows]


def model_inputs(rows: list[dict], recipe, column: str | None, name: str) -> tuple[list[str], list[list[str]]]:
    """Each row's input text, as evaluate's `input` shows it, and the fields it was made from.

    A row that gives the input itself (`prompt`, or `text` for classification and plain-text
    continuation; or --text-column) is taken as it is; a row with the fields the recipe's template
    reads (`dialogue` for "Summarize: {dialogue}") is rendered through it with prepare's own code.
    """
    canonical = get_task(recipe.task).input_field(recipe.data)
    template = getattr(recipe.data, canonical)
    given = column or _given_field(rows[0], canonical, template)
    if given is not None:
        return _texts(rows, given, name, structured=canonical in CONVERSATION_FIELDS), [[given]] * len(rows)
    return _rendered(rows, canonical, template, name)


def _given_field(row: dict, canonical: str, template: str | None) -> str | None:
    """The field that holds the input text already, or None when the row is to be rendered."""
    if canonical in row:
        return canonical
    if template is not None and _renders(template, row):
        return None
    if "text" in row:
        return "text"  # an input written out by hand, as predict took it before it applied templates
    return None if template is not None else canonical  # the error names what is missing


def _renders(template: str, row: dict) -> bool:
    from adaptctl.data.columns import template_columns

    used = template_columns(template, list(row))
    return bool(used) and all(c in row for c in used)


def _rendered(rows: list[dict], canonical: str, template: str, name: str) -> tuple[list[str], list[list[str]]]:
    """data.<canonical> rendered for every row, as prepare renders it; a row without its fields is refused."""
    from adaptctl.data.columns import check_columns, render, template_columns

    texts, used = [], []
    for i, row in enumerate(rows, 1):
        fields = [k for k in row if isinstance(k, str) and k != LINE]  # csv puts extra cells under None
        try:
            check_columns({canonical: template}, fields, f"{name}:{row.get(LINE, i)}")
        except UserError as exc:
            raise UserError(exc.message, hint=f"the row has {', '.join(fields) or 'no fields'}; give each row the "
                                              f"fields data.{canonical} reads, or the {canonical} itself as "
                                              f"'{canonical}'") from None
        texts.append(render(template, row))
        used.append(template_columns(template, fields))
    return texts, used


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


# predict's decoding options and the evaluate.generation fields they override
GENERATION_OPTIONS = {"max_new_tokens": "--max-new-tokens", "num_beams": "--num-beams", "do_sample": "--do-sample",
                      "temperature": "--temperature"}


def _check_options(output: Path | None, batch_size: int | None, decoding: dict, overwrite: bool = False):
    """Checked before the model loads (seconds) and before anything is written."""
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {batch_size}", hint="e.g. --batch-size 32")
    if output is not None:
        outputs.check(output, overwrite=overwrite)  # never over what adaptctl did not write (outputs.py)
    _check_decoding_values(decoding)


def _check_decoding_values(decoding: dict):
    """The decoding options against evaluate.generation's own rules (one definition of what is valid)."""
    from pydantic import ValidationError

    from adaptctl.recipe.schema import Generation

    try:
        Generation.model_validate(decoding)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = error["loc"][0]
        raise UserError(f"{GENERATION_OPTIONS[name]} {decoding[name]}: {error['msg'].lower()}",
                        hint=f"it overrides evaluate.generation.{name}, which takes the same values") from None


def _check_decoding_fits(recipe, decoding: dict):
    """Decoding options that would change nothing are refused, not ignored."""
    given = [GENERATION_OPTIONS[name] for name in decoding]
    if given and not get_task(recipe.task).generates:
        raise UserError(f"{', '.join(given)}: a {recipe.task} model generates nothing",
                        hint=f"the decoding options are for {' and '.join(t.name for t in all_tasks() if t.generates)} models")
    if "temperature" in decoding and not recipe.evaluate.generation.do_sample:
        raise UserError(f"--temperature {decoding['temperature']}: the temperature applies only when sampling, "
                        "and this run decodes without it", hint="add --do-sample")


def _label_map(model_dir: Path, folder: Path, info: dict) -> dict:
    """Label names: adaptctl.json's, else the run's prepare/labels.json.  A run's train/model may be an
    adapter whose base config says nothing of the labels (it would print LABEL_0, LABEL_1)."""
    if info.get("label2id"):
        return info["label2id"]
    return _run_json(model_dir, folder, "prepare/labels.json").get("label2id") or {}


def _run_temperature(model_dir: Path, folder: Path) -> float | None:
    """A run directory's evaluate.calibrate temperature (an export carries its own in adaptctl.json)."""
    return (_run_json(model_dir, folder, "evaluate/metrics.json").get("calibration") or {}).get("temperature")


def _run_json(model_dir: Path, folder: Path, relative: str) -> dict:
    """A JSON file of the run that MODEL_DIR is (a run directory) or holds the model of ({}: none)."""
    for run_dir in (Path(model_dir), folder.parent.parent):
        if (run_dir / relative).is_file():
            return json.loads((run_dir / relative).read_text())
    return {}


def predict(model_dir: Path, source: str, output: Path | None, column: str | None, batch_size: int | None,
            use_onnx: bool = False, decoding: dict | None = None, explain: bool = False, pii: str | None = None,
            threads: int | None = None, overwrite: bool = False):
    """decoding: predict's --max-new-tokens, --num-beams, --do-sample, --temperature (None: the run's);
    threads: --threads (None: the run's train.threads, else OMP_NUM_THREADS or torch's default);
    overwrite: --overwrite, replace an existing --output file."""
    from adaptctl.core.library_output import quiet_libraries

    decoding = {name: value for name, value in (decoding or {}).items() if value is not None}
    _check_options(output, batch_size, decoding, overwrite)
    quiet_libraries()
    predictor = Predictor.resolve(model_dir, decoding, use_onnx)
    _set_threads(threads, model_dir, predictor.folder)
    _check_explain(predictor.task, predictor.onnx, explain)
    with input_file(source) as (path, name):
        chunks = partial(input_rows.chunks, path, name, column, CHUNK_ROWS)  # the file is read twice
        count, names = _checked(predictor, chunks(), column, source)
        console.info(f"predict: {count} inputs with {predictor.onnx or predictor.folder} "
                     f"({predictor.task}{', onnxruntime' if predictor.onnx else ''})")
        predictor.load()
        _write(predictor, chunks(), column, source, names, output, batch_size, explain, pii, overwrite)


def _checked(predictor: Predictor, chunks, column: str | None, source: str) -> tuple[int, dict[str, str]]:
    """Every row read and turned into the model's input before the model loads, so that a bad row anywhere is
    refused before a line is written: how many rows, and the output fields' names.  With a retriever the
    retrieval waits for the second pass (it embeds every question); the rows are still parsed here."""
    count, fields = 0, dict[str, None]()
    for rows in chunks:
        if column or predictor.retriever is None:
            rows, _ = predictor.inputs(rows, column, source)
        count += len(rows)
        fields.update(dict.fromkeys(key for row in rows for key in row if key != LINE))
    if not count:
        raise UserError(f"--input {source}: no rows", hint="give at least one input")
    return count, output_field_names(fields, source)  # before the model loads: a clash is refused in a second


def _write(predictor: Predictor, chunks, column: str | None, source: str, names: dict[str, str], output: Path | None,
           batch_size: int | None, explain: bool, pii: str | None, overwrite: bool):
    """The predictions, a chunk of inputs at a time: the output grows as the results come."""
    settings: Any = getattr(predictor.recipe.data, "pii", None)  # a recipe.Pii, or None
    screen = (pii or settings.action) if get_task(predictor.task).generates and (pii or settings) else None
    found: dict[str, int] = {}  # personal data found in the generated text, over every chunk

    def lines():
        for rows in chunks:
            rows, texts = predictor.inputs(rows, column, source)
            results = predictor.predict(texts, batch_size, explain)
            if screen:
                results = _screened(results, rows, source, screen, tuple(settings.detect) if settings else None,
                                    counts=found)
            results = with_answers(results, predictor.recipe)  # from the screened text: a redacted answer stays redacted
            yield "".join(json.dumps(output_line(row, text, result, names), ensure_ascii=False) + "\n"
                          for row, text, result in zip(rows, texts, results))
        if screen:
            _say_screened(found, screen)

    if output is None:
        # each chunk as soon as it is predicted (a file goes through outputs.write, which redacts too); under
        # --pii refuse every chunk is screened first, so that a refusal prints nothing
        for text in (list(lines()) if screen == "refuse" else lines()):
            sys.stdout.write(redact(text))
            sys.stdout.flush()
    else:
        outputs.write(output, lines(), overwrite=overwrite)  # a new file appears whole at the end, or not at all
        console.info(f"predict: wrote {output}")


def _screened(results: list[dict], rows: list[dict], source: str, action: str, kinds: tuple | None = None,
              counts: dict | None = None) -> list[dict]:
    """--pii (or the run's data.pii.action) on generated text: personal data counted, redacted, or refused
    at the first input whose answer holds any (data/pii.py).  `counts`: where to add what is found, for a
    caller that screens chunk by chunk and says the total once (_say_screened); without it, said now."""
    from adaptctl.data import pii

    pii.check_action(action)
    say = counts is None
    kinds, counts, screened = kinds or tuple(pii.KINDS), {} if counts is None else counts, []
    for row, result in zip(rows, results):
        spans = pii.find(result["prediction"], kinds)
        pii.count(counts, spans)
        if spans and action == "refuse":
            where = f"{source}:{row[LINE]}" if LINE in row else source
            raise UserError(f"{where}: the generated text holds personal data ({', '.join(sorted({s.kind for s in spans}))})",
                            hint="--pii redact replaces it with typed placeholders; nothing was written")
        screened.append({**result, "prediction": pii.redact(result["prediction"], spans)} if action == "redact" else result)
    if say:
        _say_screened(counts, action)
    return screened


def _say_screened(counts: dict, action: str):
    from adaptctl.data.pii import counted

    console.info(f"predict: {counted(counts)}{' (redacted)' if action == 'redact' and counts else ''}")


@dataclass
class Predictor:
    """A model as predict runs it, split in two so that a server loads it once and predicts many batches
    (adaptctl serve): `resolve` finds the folder and what the run knows of it (task, label names,
    calibration temperature, how inputs are rendered and decoded) without loading any weights, so that a
    wrong folder or option fails in milliseconds; `load` checks the folder's safety and loads the
    tokenizer and the model; `predict` runs the task's own predict hook on a batch of input texts."""

    model_dir: Path
    folder: Path
    task: str
    info: dict
    recipe: InferenceRecipe     # an inference_recipe.InferenceRecipe
    onnx: Path | None = None
    tokenizer: Any = None
    model: Any = None

    @classmethod
    def resolve(cls, model_dir: Path, decoding: dict | None = None, use_onnx: bool = False) -> Predictor:
        from adaptctl.models.loading import read_info

        decoding = decoding or {}
        folder = model_folder(model_dir)
        _check_chain(model_dir, folder)
        onnx = onnx_file(model_dir, folder, use_onnx)
        info = read_info(folder)
        task = info.get("task") or _task_from_config(folder)
        if get_task(task).has_label_map:
            info = {**info, "label2id": _label_map(model_dir, folder, info)}
        if get_task(task).calibrates and "temperature" not in info:
            info = {**info, "temperature": _run_temperature(model_dir, folder)}
        recipe = trained_as(model_dir, folder, info, task, decoding)
        _check_decoding_fits(recipe, decoding)
        return cls(model_dir=Path(model_dir), folder=folder, task=task, info=info, recipe=recipe, onnx=onnx)

    @property
    def spec(self):
        return get_task(self.task)

    def run_name(self) -> str | None:
        """The name of the run the model comes from (its recipe.yaml), if the folder is in one."""
        recipe_file = _run_recipe_file(self.model_dir, self.folder)
        return _read_recipe(recipe_file).name if recipe_file is not None else None

    def load(self) -> Predictor:
        from transformers import AutoConfig, AutoTokenizer

        from adaptctl.models.loading import check_folder_and_base, tokenizer_options

        if self.spec.predict is None:
            raise UserError(f"predict does not support task {self.task} yet", hint="use adaptctl evaluate")
        # predict has no recipe to trust a folder with: custom code and pickle weights are refused here,
        # before transformers could ask on stdin (where `yes y |` would answer for the user).
        check_folder_and_base(self.folder)
        # the task's own model types (a mean-pooling classifier) known first: AutoTokenizer reads the config too
        self.spec.register_models()
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder), **tokenizer_options())
        if self.onnx is not None:  # the task's own predict over onnxruntime: the same batching, the same JSON lines
            from adaptctl.export.onnx_runtime import OnnxModel

            self.model = OnnxModel(self.onnx, AutoConfig.from_pretrained(str(self.folder), trust_remote_code=False))
        else:
            self.model = _load(self.folder, self.spec)
        return self

    @cached_property
    def retriever(self):
        """data.retrieval's index and embedder as the run prepared them (retrieval/shipped.py ShippedRetriever),
        opened on first use; None where the model reads no passages.  A changed or missing embedder is refused."""
        from adaptctl.retrieval.shipped import open_retriever

        return open_retriever(self.model_dir, self.folder)

    def inputs(self, rows: list[dict], column: str | None, name: str) -> tuple[list[dict], list[str]]:
        """The rows as the model reads them, predict's and serve's one path: with data.retrieval each row that
        gives no prompt of its own gets the passages retrieved for it, as prepare retrieved them, and their ids
        (`passage_ids`); then each row's input text (model_inputs).  With --text-column the column is the input
        as it is, and nothing is retrieved."""
        retriever = None if column else self.retriever
        if retriever is not None:
            rows = retriever.attach(rows, name)
        texts, _ = model_inputs(rows, self.recipe, column, name)
        return rows, texts

    def predict(self, texts: list[str], batch_size: int | None = None, explain: bool = False) -> list[dict]:
        """The task's predictions for input texts (as model_inputs gives them), in their order."""
        results = self.spec.predict(self.model, self.tokenizer, texts, self.recipe, self.info,
                                    batch_size or self.recipe.evaluate.batch_size)
        if explain:
            return _with_attributions(self.spec, self.model, self.tokenizer, texts, results, self.recipe)
        return results


def _check_chain(model_dir: Path, folder: Path):
    """A run chained on an earlier run (model.base) whose parent was trained again since is refused, as
    evaluate and export refuse it: its model was made on the parent's old weights."""
    from adaptctl.run.freshness import stale_chain
    from adaptctl.core.rundir import is_run_directory

    run_dir = next((d for d in (Path(model_dir), folder.parent.parent) if is_run_directory(d)), None)
    if run_dir is not None and (problem := stale_chain(run_dir)):
        raise UserError(f"{problem}: its model would not be the one it was trained as",
                        hint=f"run the stages of {run_dir} again (adaptctl run RECIPE --run-dir {run_dir}) "
                             "to train it on the earlier run's new model")


# What predict adds to each row (docs/outputs-and-warnings.md): the input as the model read it, the prediction, and per task
# the class probabilities, masked-lm fills, the answer evaluate.answer_pattern extracts, --explain's attributions.
OUTPUT_FIELDS = ("input", "prediction", "probabilities", "fills", "predicted_answer", "attributions")


def output_field_names(fields: dict, source: str) -> dict[str, str]:
    """Each output field -> its name in the output lines: its own, or adaptctl_<name> where an input row has
    a field of that name (data/passthrough.py); said in the log."""
    from adaptctl.data.passthrough import output_names, renamed

    names = output_names(fields, OUTPUT_FIELDS, f"--input {source}")
    if moved := renamed(names):
        console.info(f"predict: the input has fields named as predict's outputs; they stay, and the outputs are "
                     f"written as {', '.join(moved)}")
    return names


def output_line(row: dict, text: str, result: dict, names: dict[str, str]) -> dict:
    """Every input field as it came (an id, the user's own label), then the input as the model read it and
    the prediction under evaluate/predictions.jsonl's keys (renamed where an input field has the name)."""
    from adaptctl.data.passthrough import merged

    return merged({k: v for k, v in row.items() if k != LINE}, {"input": text, **result}, names)


def with_answers(results: list[dict], recipe) -> list[dict]:
    """Generated text with evaluate.answer_pattern: the answer it extracts beside the text (None: no match),
    as evaluate scores it."""
    pattern = getattr(recipe.evaluate, "answer_pattern", None)
    if not pattern or not get_task(recipe.task).generates:
        return results
    import re

    from adaptctl.evaluation.metrics import extract_answer

    compiled = re.compile(pattern)
    return [{**result, "predicted_answer": extract_answer(result["prediction"], compiled)} for result in results]


def trained_as(model_dir: Path, folder: Path, info: dict, task: str, decoding: dict):
    """How the model was trained and evaluated: the settings an export ships in its adaptctl.json, else
    the run's recipe.yaml (a run directory, or a model folder inside one), else what training recorded."""
    from adaptctl.recipe import inference as inference_recipe

    if info.get("inference"):
        return inference_recipe.from_shipped(task, info["inference"], decoding)
    recipe_file = _run_recipe_file(Path(model_dir), folder)
    if recipe_file is not None:
        return inference_recipe.of_recipe(_read_recipe(recipe_file), decoding)
    return inference_recipe.from_shipped(task, {"data": info}, decoding)  # train's adaptctl.json: prompt, chat_template, max_length


def _set_threads(threads: int | None, model_dir: Path, folder: Path):
    """As the run's stages set them (train.threads), so that predict is not slower than evaluate on the same
    machine: two threads on a busy 2-core machine generated 4x slower than one (train.threads)."""
    from adaptctl.training.hardware import set_threads

    recipe_file = _run_recipe_file(Path(model_dir), folder) if threads is None else None
    ran_with = _read_recipe(recipe_file).train.threads if recipe_file is not None else None
    count, where = set_threads(threads or ran_with, "--threads" if threads else f"train.threads in {recipe_file}")
    console.info(f"predict: {count} CPU threads ({where})")


def _run_recipe_file(model_dir: Path, folder: Path) -> Path | None:
    for run_dir, holds_it in ((model_dir, folder != model_dir),
                              (folder.parent.parent, folder.parent.name in ("train", "distill", "export"))):
        if holds_it and (run_dir / "recipe.yaml").is_file():
            return run_dir / "recipe.yaml"
    return None


def _read_recipe(path: Path):
    """A run's resolved recipe (written by adaptctl: no extends, no overrides left to apply)."""
    import yaml
    from pydantic import ValidationError

    from adaptctl.recipe.schema import Recipe

    try:
        return Recipe.model_validate(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValidationError) as exc:
        raise UserError(f"{path}: not a recipe this adaptctl can read ({type(exc).__name__})",
                        hint="pass the run's export/model folder, or re-run the run's stages with this adaptctl") from None


def _task_from_config(folder: Path) -> str:
    from adaptctl.tasks import task_of_architectures

    config = read_json_object(folder / "config.json")  # missing or damaged: the task cannot be told, said below
    task = task_of_architectures(config.get("architectures") or [])
    if task is None:
        raise UserError(f"cannot tell the task of {folder}", hint="export it with adaptctl, which records the task")
    return task


def _check_explain(task: str, onnx: Path | None, explain: bool):
    """--explain needs the task's attributions and the torch model (gradients); refused before anything loads."""
    if not explain:
        return
    if get_task(task).explain is None:
        explained = " and ".join(t.name for t in all_tasks() if t.explain)
        raise UserError(f"--explain: a {task} model has no token attributions", hint=f"they are for {explained} models")
    if onnx is not None:
        raise UserError("--explain needs the model's gradients, which onnxruntime does not give",
                        hint="drop --onnx (the folder's safetensors weights are the same model)")


def _with_attributions(module, model, tokenizer, texts: list[str], results: list[dict], recipe) -> list[dict]:
    """Each result with its token attributions towards the predicted class (`attributions`)."""
    targets = [list(r["probabilities"]).index(r["prediction"]) for r in results]
    found = module.explain(model, tokenizer, texts, targets, recipe)
    return [{**result, "attributions": attribution} for result, attribution in zip(results, found)]


# Inputs predicted, then written, at a time: the output grows as the results come, and memory holds one
# chunk's results, not every probability map or generated text of a 100k-row input until its end.
CHUNK_ROWS = 4096


def _load(folder: Path, module):
    from adaptctl.evaluation.inference import device
    from adaptctl.models.loading import load_options

    if (folder / "adapter_config.json").exists():
        from adaptctl.models.loading import load_adapter

        model = load_adapter(folder, auto_class=module.auto_class, options=load_options())
    else:
        model = module.model_class().from_pretrained(str(folder), **load_options())
    return model.to(device()).eval()
