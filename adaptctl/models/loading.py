"""Load models safely: base models for training, and adapted models (a full
model folder or a peft adapter over its recorded base) for evaluate, export,
distill and predict."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from adaptctl.core.errors import UserError
from adaptctl.models.resolve import has_safetensors_weights, pickle_files
from adaptctl.core.rundir import read_json_object  # absent or unreadable: from_pretrained says so in its own words


def load_base_model(task, path: Path, recipe, label2id: dict, method_options: dict | None = None):
    """A model folder with the task's model class (task: a tasks.spec.TaskSpec); method_options: the
    method's own from_pretrained kwargs (MethodSpec.load_options: qlora's 4-bit quantization)."""
    check_loadable(path, recipe)
    kwargs = {"dtype": torch.float32, **task.model_kwargs(label2id), **(method_options or {})}
    model_class = task.model_class_for(recipe, path) or task.model_class()
    try:  # load_options apart: no method's options may set trust_remote_code (a clash is a TypeError)
        model = model_class.from_pretrained(str(path), **kwargs, **load_options(recipe))
    except ValueError as exc:
        if "trust_remote_code" in str(exc):  # custom code that check_loadable could not see (no auto_map)
            raise UserError(f"model {recipe.model.base} needs its own code to load",
                            hint="set model.trust_remote_code: true if you trust that code") from None
        raise
    return task.on_load(model, path)  # the task's word on what loaded (masked-lm: a fresh head)


def load_options(recipe=None) -> dict:
    """What every from_pretrained in adaptctl passes: never a model folder's own code unless the recipe
    trusts it (None would let transformers ask on stdin, and `yes y |` answers), and safetensors only
    unless the recipe allows pickle weights (then transformers still prefers safetensors)."""
    trusted = bool(recipe is not None and recipe.model.trust_remote_code)
    allow_pickle = bool(recipe is not None and recipe.model.allow_pickle)
    return {"trust_remote_code": trusted, **({} if allow_pickle else {"use_safetensors": True})}


def tokenizer_options(recipe=None) -> dict:
    """load_options for AutoTokenizer/AutoConfig, which take no use_safetensors."""
    return {"trust_remote_code": load_options(recipe)["trust_remote_code"]}


# A folder's own code is named by auto_map in these files (transformers' custom-code mechanism).
CODE_CONFIGS = ("config.json", "tokenizer_config.json", "adapter_config.json")
# A tokenizer needs its vocabulary: without one of these, transformers builds a 5-token tokenizer
# and every word becomes the unknown token.
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                    "sentencepiece.bpe.model")


def check_loadable(path: Path, recipe=None, *, name: str | None = None):
    """Refuse, before anything loads, a model folder that would run code from itself: pickle weights
    (unless model.allow_pickle) or custom model/tokenizer classes (unless model.trust_remote_code).
    A peft adapter folder is checked for its adapter weights.  Without a recipe (predict) nothing is
    trusted.  `name` is what the messages call the model (default: model.base, else the folder)."""
    path = Path(path)
    name = name or (recipe.model.base if recipe is not None else str(path))
    trusted = load_options(recipe)["trust_remote_code"]
    allow_pickle = bool(recipe is not None and recipe.model.allow_pickle)
    if not allow_pickle and not has_safetensors_weights(path):
        if pickles := pickle_files(path):
            raise UserError(f"model {name} has only pickle weights (.bin) in {path} ({', '.join(pickles[:5])}), "
                            "which can run code when loaded",
                            hint=_hint(recipe, "convert it to safetensors", "model.allow_pickle: true"))
    check_readable(path, name)
    if not trusted:
        for config in CODE_CONFIGS:
            if "auto_map" in read_json_object(path / config) and not adaptctl_own_code(path / config):
                raise UserError(f"model {name} needs its own code to load (auto_map in {path / config})",
                                hint=_hint(recipe, "use a model that transformers supports natively",
                                           "model.trust_remote_code: true"))


def adaptctl_own_code(config: Path) -> bool:
    """Whether every auto_map entry of a config names adaptctl's own model code (mean_pooling.py), shipped
    beside it byte for byte: no code of the folder's, and adaptctl loads its registered copy, never that file."""
    mapped = read_json_object(config).get("auto_map")
    modules = {str(target).split(".")[0] for target in mapped.values()} if isinstance(mapped, dict) else {None}
    own = Path(__file__).with_name("mean_pooling.py")  # not imported: that would load torch for a check
    shipped = config.parent / own.name
    return modules == {own.stem} and shipped.is_file() and shipped.read_bytes() == own.read_bytes()


def check_readable(path: Path, name: str):
    """A damaged config.json or weights file is the user's to replace (exit 1 naming it), not a traceback
    from deep inside from_pretrained.  Reads the JSON and the safetensors headers only: milliseconds."""
    from safetensors import safe_open

    if not path.is_dir():
        return
    for config in CODE_CONFIGS:
        if (path / config).is_file():
            try:
                json.loads((path / config).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UserError(f"model {name}: {path / config} is not readable JSON ({exc})",
                                hint="the file is damaged; copy or save the model folder again") from None
    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt"):
                pass
        except Exception as exc:  # safetensors raises its own error types for a bad header
            raise UserError(f"model {name}: {weights} is not a readable safetensors file ({exc})",
                            hint="the file is damaged or was cut short; copy or save the model folder again") from None


def _hint(recipe, fix: str, setting: str) -> str:
    if recipe is None:  # predict has no recipe to trust a folder with
        return f"{fix}; adaptctl predict never runs a model folder's code or unpickles its weights"
    return f"{fix}, or set {setting} if you trust the folder"


def check_tokenizer_files(path: Path, field: str = "model.base"):
    """A model folder without its vocabulary trains on all-unknown input: refuse it by name."""
    path = Path(path)
    if path.is_dir() and not any((path / n).is_file() for n in VOCABULARY_FILES):
        raise UserError(f"{field}: the model folder {path} has no tokenizer files (none of {', '.join(VOCABULARY_FILES)})",
                        hint="save the tokenizer beside the weights (tokenizer.save_pretrained(folder)) "
                             "or copy the tokenizer files of the model it came from")


def read_info(model_dir: Path) -> dict:
    """adaptctl.json beside a trained model: task, method, base model, label map."""
    path = Path(model_dir) / "adaptctl.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # damaged: its task and label names would be silently lost
        raise UserError(f"{path} is not readable JSON ({exc})", hint="the file is damaged; export or train the model again") from None
    if not isinstance(info, dict):
        raise UserError(f"{path} is not a JSON object", hint="the file is damaged; export or train the model again")
    return info


def load_adapted(model_dir: Path, task, recipe, label2id: dict):
    """A trained model folder: a peft adapter is loaded over its base (not merged)."""
    model_dir = Path(model_dir)
    if not (model_dir / "adapter_config.json").exists():
        return load_base_model(task, model_dir, recipe, label2id)
    check_loadable(model_dir, recipe)  # the adapter's own weights; its base is checked as it loads
    return load_adapter(model_dir, base=load_base_model(task, adapter_base(model_dir), recipe, label2id))


def load_adapter(folder, base=None, auto_class: str | None = None, options: dict | None = None):
    """A saved peft adapter: over `base` (a loaded model), or with peft's AutoPeftModel counterpart of the
    transformers Auto class named `auto_class`, which loads the base the adapter records with `options`
    (loading.load_options: no remote code, safetensors only).  Callers check both folders first
    (loading.check_loadable)."""
    import peft

    from adaptctl.models.peft_compat import install_prefix_tuning_fix

    install_prefix_tuning_fix()  # prefix adapters on encoder models under transformers 5 (see there)
    if base is not None:
        return peft.PeftModel.from_pretrained(base, str(folder))
    options = options if options is not None else {"trust_remote_code": False, "use_safetensors": True}
    from adaptctl.models.mean_pooling import MODEL_TYPE

    info = read_info(folder)
    if info.get("model_type") == MODEL_TYPE:  # peft's Auto class would rebuild the [CLS] classifier
        from adaptctl.models.resolve import base_model_class

        labels = info.get("label2id") or {}
        names = {"label2id": labels, "id2label": {i: name for name, i in labels.items()}} if labels else {}
        base = base_model_class(info).from_pretrained(str(adapter_base(folder)), **names, **options)
        return peft.PeftModel.from_pretrained(base, str(folder))
    assert auto_class is not None  # without a base, callers name the Auto class
    return getattr(peft, auto_class.replace("AutoModel", "AutoPeftModel")).from_pretrained(str(folder), **options)


def adapter_base(model_dir: Path) -> Path:
    """The base model folder a peft adapter was trained on: adaptctl.json's record, else peft's."""
    model_dir = Path(model_dir)
    recorded = read_info(model_dir).get("base_model_path")
    return Path(recorded or read_json_object(model_dir / "adapter_config.json").get("base_model_name_or_path") or "")


def check_folder_and_base(folder: Path, recipe=None):
    """check_loadable on a model folder and, for a peft adapter, on the base model it loads too."""
    check_loadable(folder, recipe)
    if (Path(folder) / "adapter_config.json").is_file():
        check_loadable(adapter_base(folder), recipe)
