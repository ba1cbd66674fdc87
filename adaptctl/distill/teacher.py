"""The teacher: where it is, what it predicts over, and loading it for inference.

`distill.teacher` names a run directory (its model as rundir.run_model_folder
finds it: export/model, else distill/model, else train/model), a model folder
(full weights, or a peft adapter whose base is recorded in adaptctl.json), or a
hub id resolved offline like model.base.  The teacher must speak the student's
language: the same tokenizer, and the same label set (classification) or
vocabulary (causal-lm).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from adaptctl.data.tokens import ENCODER_INPUTS
from adaptctl.core.errors import UserError
from adaptctl.core.rundir import MODEL_STAGES, content_hash, file_hash, json_hash, run_model_folder

FIELD = "distill.teacher"


@dataclass(frozen=True)
class Teacher:
    spec: str                 # what the recipe wrote
    path: Path                # a full model folder or a peft adapter folder
    base_path: Path | None    # the adapter's base model folder (None for full weights)
    where: str                # for messages: "run directory runs/x (train/model)", "model folder", ...

    @property
    def tokenizer_path(self) -> Path:
        has_tokenizer = any((self.path / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))
        return self.path if has_tokenizer or self.base_path is None else self.base_path


# ------------------------------------------------------------------ finding
def resolve_teacher(spec: str, recipe_dir: Path) -> Teacher:
    from adaptctl.models.resolve import resolve_model

    local = Path(spec).expanduser()
    local = local if local.is_absolute() else Path(recipe_dir) / local
    if local.is_dir():
        if (local / "config.json").is_file() or (local / "adapter_config.json").is_file():
            return _folder(spec, local.resolve(), f"model folder {local}")
        if _is_run_dir(local):
            return _from_run_dir(spec, local.resolve())
        raise UserError(f"{FIELD}: {local} is neither a model folder (no config.json) nor a run directory",
                        hint="name a run directory (with train/ or export/), a model folder, or a hub id")
    try:
        resolved = resolve_model(spec, base_dir=recipe_dir)
    except UserError as exc:
        raise UserError(f"{FIELD}: cannot find the teacher {spec!r}: not a run directory, a model folder "
                        "or a model available offline", hint=f"train the teacher first (`adaptctl train TEACHER_RECIPE`) "
                        f"and set {FIELD} to its run directory", details=exc.details) from None
    return Teacher(spec, resolved.path, None, f"model {spec} ({resolved.source})")


def _is_run_dir(folder: Path) -> bool:
    return any((folder / stage / "manifest.json").is_file() for stage in ("prepare", *MODEL_STAGES))


def _from_run_dir(spec: str, root: Path) -> Teacher:
    found = run_model_folder(root)
    if found is not None:
        model, stage = found
        return _folder(spec, model, f"run directory {root} ({stage}/model)")
    raise UserError(f"{FIELD}: run directory {root} has no trained model (no complete export, distill or train stage)",
                    hint=f"run `adaptctl train` (or `adaptctl run`) on the teacher's recipe with --run-dir {root} first")


def _folder(spec: str, folder: Path, where: str) -> Teacher:
    if not (folder / "adapter_config.json").is_file():
        return Teacher(spec, folder, None, where)
    from adaptctl.models.loading import read_info

    recorded = read_info(folder).get("base_model_path") or \
        json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    base = Path(recorded) if recorded else None
    if base is None or not (base / "config.json").is_file():
        raise UserError(f"{FIELD}: the adapter in {folder} needs its base model, which is not at {recorded}",
                        hint="export the teacher with merged weights (`adaptctl export`) and point at export/model")
    return Teacher(spec, folder, base, where)


def identity(teacher: Teacher) -> str:
    """A content hash of the teacher's weights and config: re-training the teacher changes it."""
    parts = [file_hash(teacher.path)]
    if teacher.base_path is not None:  # an adapter: its base's weights are the teacher's too
        parts.append(content_hash(teacher.base_path) if Path(teacher.base_path).is_dir() else str(teacher.base_path))
    return json_hash(parts)


# ------------------------------------------------------------------ checks
def check_safe(teacher: Teacher, recipe):
    """The teacher's folders (an adapter and its base) under the recipe's model.trust_remote_code and
    model.allow_pickle, named as distill.teacher, before any of their files is read by transformers."""
    from adaptctl.models.loading import check_loadable

    for folder in (teacher.path, teacher.base_path):
        if folder is not None:
            check_loadable(folder, recipe, name=f"{teacher.spec} ({FIELD})")


def teacher_label2id(teacher: Teacher, recipe) -> dict:
    """The label map the teacher's head predicts: adaptctl.json's, else its config's."""
    from transformers import AutoConfig

    from adaptctl.models.loading import read_info, tokenizer_options

    recorded = read_info(teacher.path).get("label2id")
    if recorded:
        return {str(k): int(v) for k, v in recorded.items()}
    config = AutoConfig.from_pretrained(str(teacher.base_path or teacher.path), **tokenizer_options(recipe))
    return {str(k): int(v) for k, v in config.label2id.items()}


def label_permutation(teacher_labels: dict, data_labels: dict, where: str) -> list[int] | None:
    """Teacher logit columns in the data's label order (None when already aligned); an error if the sets differ."""
    if set(teacher_labels) != set(data_labels):
        only_teacher = sorted(set(teacher_labels) - set(data_labels))
        only_data = sorted(set(data_labels) - set(teacher_labels))
        raise UserError(f"{FIELD}: the teacher's labels differ from the data's: teacher only "
                        f"[{', '.join(only_teacher) or '-'}], data only [{', '.join(only_data) or '-'}] ({where})",
                        hint="distil from a teacher fine-tuned on the same classes (data.label), "
                             "e.g. the run directory of a train run on this data")
    order = [teacher_labels[name] for name in sorted(data_labels, key=data_labels.__getitem__)]
    return None if order == list(range(len(order))) else order


def label_order(teacher: Teacher, recipe, data_labels: dict) -> tuple[dict, list[int] | None]:
    """Soft targets over labels: the teacher's label map and its logit columns in the data's order ({} and
    None when they cover the vocabulary)."""
    from adaptctl.tasks import get_task

    if get_task(recipe.task).distill_over != "labels":
        return {}, None
    labels = teacher_label2id(teacher, recipe)
    return labels, label_permutation(labels, data_labels, teacher.where)


def check_tokenizers(teacher: Teacher, data_tokenizer, student_path: Path, student_label: str, recipe=None):
    """Teacher, student and prepared data must share one vocabulary (token id -> same token)."""
    from transformers import AutoTokenizer

    from adaptctl.models.loading import tokenizer_options

    data_vocab = data_tokenizer.get_vocab()
    others = [(f"the teacher ({teacher.where})", teacher.tokenizer_path), (student_label, student_path)]
    for label, path in others:
        try:
            vocab = AutoTokenizer.from_pretrained(str(path), **tokenizer_options(recipe)).get_vocab()
        except (OSError, ValueError):
            raise UserError(f"{FIELD}: cannot load the tokenizer of {label} from {path}",
                            hint="a teacher or student folder needs its tokenizer files beside the weights") from None
        if vocab != data_vocab:
            raise UserError(f"{FIELD}: {label} has a different tokenizer from the one the data was prepared with "
                            f"(model.base): {_vocab_difference(vocab, data_vocab)}",
                            hint="teacher and student must share a tokenizer: distil within one model family "
                                 "(e.g. a teacher fine-tuned from model.base)")


def _vocab_difference(theirs: dict, ours: dict) -> str:
    if len(theirs) != len(ours):
        return f"{len(theirs)} tokens against {len(ours)}"
    moved = [t for t in theirs if ours.get(t) != theirs[t]]
    return f"{len(moved)} of {len(ours)} tokens differ, e.g. {moved[0]!r}" if moved else "same tokens"


def check_output_size(teacher_model, student_model, over: str):
    """Logit widths must match: the number of labels or the vocabulary size (`over`: the task spec's
    distill_over, "labels" or "vocabulary")."""
    teacher_width = _output_width(teacher_model, over)
    student_width = _output_width(student_model, over)
    if teacher_width != student_width:
        what = "vocabulary size (lm_head rows)" if over == "vocabulary" else "number of labels"
        raise UserError(f"{FIELD}: the teacher's {what} is {teacher_width}, the student's {student_width}",
                        hint="teacher and student must predict over the same vocabulary: distil within one model family")


def _output_width(model, over: str) -> int:
    if over == "vocabulary":
        return model.get_output_embeddings().weight.shape[0]
    return model.config.num_labels


# ------------------------------------------------------------------ loading
def load_teacher(teacher: Teacher, recipe, label2id: dict):
    """The teacher in eval mode with frozen weights; a peft adapter is merged into its base."""
    from adaptctl.models.loading import load_adapted
    from adaptctl.tasks import get_task

    # Loading checks (pickle weights, remote code) name the model; make them name the teacher.
    named = recipe.model_copy(update={"model": recipe.model.model_copy(update={"base": f"{teacher.spec} ({FIELD})"})})
    model = load_adapted(teacher.path, get_task(recipe.task), named, label2id)
    if teacher.base_path is not None:
        model = model.merge_and_unload()
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


class InDataLabelOrder:
    """A teacher whose logits come in the data's label order, so evaluate reads them like the student's."""

    def __init__(self, model, permutation: list[int]):
        self.model, self.permutation = model, permutation

    def __call__(self, **inputs):
        outputs = self.model(**inputs)
        outputs.logits = outputs.logits[..., self.permutation]
        return outputs

    def to(self, device):
        self.model.to(device)
        return self

    def eval(self):
        self.model.eval()
        return self

    def parameters(self):  # for evaluation's weights_cast_once
        return self.model.parameters()


def load_for_evaluation(teacher: Teacher, recipe, data_labels: dict):
    """The frozen teacher, predicting in the data's label order."""
    check_safe(teacher, recipe)  # before label_order reads its config
    teacher_labels, permutation = label_order(teacher, recipe, data_labels)
    model = load_teacher(teacher, recipe, teacher_labels)
    return model if permutation is None else InDataLabelOrder(model, permutation)


def teacher_forward(model, batch: dict, precision: str = "auto"):
    """Teacher logits as a normal (not inference-mode) float tensor, so the loss can use them."""
    return teacher_outputs(model, batch, precision)[0]


def teacher_outputs(model, batch: dict, precision: str = "auto", layers: list[int] | None = None):
    """(logits, hidden states or None) of the teacher, as ordinary float tensors.  With `layers`, the
    hidden states are {t + 1: output of layer t} for those layers, indexed like the model's own tuple
    (embeddings first); only they are kept, not every layer's."""
    import torch

    from adaptctl.evaluation.inference import autocast

    feed = {k: v for k, v in batch.items() if k in ENCODER_INPUTS}
    with torch.inference_mode(), autocast(precision):
        outputs = model(**feed, output_hidden_states=layers is not None)
    # clones made outside inference_mode are ordinary tensors
    logits = outputs.logits.float().clone()
    hidden = {t + 1: outputs.hidden_states[t + 1].float().clone() for t in layers} if layers is not None else None
    return logits, hidden


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["Teacher", "resolve_teacher", "identity", "check_safe", "teacher_label2id", "label_permutation", "label_order",
           "check_tokenizers", "check_output_size", "load_teacher", "load_for_evaluation", "teacher_forward",
           "teacher_outputs", "count"]
