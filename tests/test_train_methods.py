"""train stage: every adaptation method on every task trains a few steps, changes the weights it
trains and leaves the frozen ones untouched, and saves what it trained.

Tiny random models built from configs (BERT with the packaged MiniLM tokenizer; Llama and T5 with
the SmolLM2 tokenizer, see tiny_generation.py), small data files in tmp, the real CLI in-process.
The trained model is caught in the act (a spy on TrainingSession.train_and_save) so that every
parameter can be compared before and after training, then the saved model is compared with it.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import tiny_generation as tg

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TASKS = ("classification", "causal-lm", "seq2seq", "extractive-qa")
METHODS = {
    "full": {"name": "full"},
    "freeze": {"name": "freeze", "train_last_layers": 1},
    "lora": {"name": "lora"},
    "dora": {"name": "dora"},
    "ia3": {"name": "ia3"},
    "prefix-tuning": {"name": "prefix-tuning", "num_virtual_tokens": 4},
    "prompt-tuning": {"name": "prompt-tuning", "num_virtual_tokens": 4},
}
PEFT = ("lora", "dora", "ia3", "prefix-tuning", "prompt-tuning")
HEADS = {"classification": "classifier", "extractive-qa": "qa_outputs"}
TRAIN = {"max_steps": 3, "batch_size": 8, "precision": "fp32", "logging_steps": 1}


# ------------------------------------------------------------------ tiny models and data
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from adaptctl.models.resolve import resolve_model

    return AutoTokenizer.from_pretrained(str(resolve_model(MINILM).path))


def tiny_bert(folder: Path, head, **config) -> Path:
    from transformers import BertConfig

    tokenizer = minilm_tokenizer()
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=256, **config)
    head(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


TOPICS = {"sport": "match goal team coach score", "weather": "rain cloud sunny storm wind",
          "food": "bread soup cheese apple dinner"}


def write_classification_csv(path: Path, rows: int = 60) -> Path:
    rng = random.Random(0)
    lines = ["text,label"]
    for i in range(rows):
        label = list(TOPICS)[i % 3]
        lines.append(" ".join(rng.choices(TOPICS[label].split() + ["the", "a", "today"], k=7)) + f",{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_squad(path: Path, people: int = 12) -> Path:
    cities = ["London", "Paris", "Rome", "Oslo", "Lima", "Cairo", "Delhi", "Tokyo", "Quito", "Bern", "Riga", "Sofia"]
    data = []
    for n in range(people):
        name, city, year = f"Person{n}", cities[n % len(cities)], str(1800 + 7 * n)
        context = f"{name} was born in {city} in {year} and later worked as a painter."
        qas = [{"id": f"q{n}-{k}", "question": q, "answers": [{"text": a, "answer_start": context.index(a)}]}
               for k, (q, a) in enumerate([(f"Where was {name} born?", city), (f"When was {name} born?", year)])]
        data.append({"title": name, "paragraphs": [{"context": context, "qas": qas}]})
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


def classification_setup(folder: Path) -> dict:
    from transformers import BertForSequenceClassification

    model = tiny_bert(folder / "base", BertForSequenceClassification, num_labels=3)
    data = write_classification_csv(folder / "topics.csv")
    return {"name": "tiny-classification", "task": "classification", "seed": 3, "model": {"base": str(model)},
            "data": {"source": str(data), "text": "text", "label": "label", "max_length": 32,
                     "splits": {"validation": 0.1, "test": 0.1}}}


def qa_setup(folder: Path) -> dict:
    from transformers import BertForQuestionAnswering

    model = tiny_bert(folder / "base", BertForQuestionAnswering)
    data = write_squad(folder / "squad.json")
    return {"name": "tiny-qa", "task": "extractive-qa", "seed": 3, "model": {"base": str(model)},
            "data": {"source": {"path": str(data), "field": "data"}, "max_length": 64, "stride": 16,
                     "splits": {"validation": 0.15, "test": 0.15}}}


def generation_setup(folder: Path, task: str) -> dict:
    save = tg.save_tiny_llama if task == "causal-lm" else tg.save_tiny_t5
    model = save(folder / "base")
    recipe = tg.recipe_dict(model, tg.write_pairs(folder / "pairs.jsonl", rows=40), task=task)
    return {k: v for k, v in recipe.items() if k in ("name", "task", "seed", "model", "data")}


SETUPS = {"classification": classification_setup, "extractive-qa": qa_setup,
          "causal-lm": lambda f: generation_setup(f, "causal-lm"), "seq2seq": lambda f: generation_setup(f, "seq2seq")}


@pytest.fixture(scope="module")
def task_setup(tmp_path_factory):
    """task -> recipe without method/train (a tiny base model and data, made once per task)."""
    made = {}

    def get(task: str) -> dict:
        if task not in made:
            made[task] = SETUPS[task](tmp_path_factory.mktemp(task))
        return made[task]

    return get


@pytest.fixture
def spy(monkeypatch):
    """Catches the model that train_and_save trains, with a copy of every parameter from before."""
    from adaptctl.training.session import TrainingSession

    seen = {}
    original = TrainingSession.train_and_save

    def train_and_save(self):
        seen["before"] = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        seen["session"] = self
        return original(self)

    monkeypatch.setattr(TrainingSession, "train_and_save", train_and_save)
    return seen


def write_recipe(folder: Path, recipe: dict) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def prepare_and_train(run_cli, tmp_path, recipe) -> tuple[Path, str]:
    path, run = write_recipe(tmp_path, recipe), tmp_path / "run"
    code, _, err = run_cli(["prepare", path, "--run-dir", run])
    assert code == 0, err
    code, _, err = run_cli(["train", path, "--run-dir", run])
    assert code == 0, err
    return run, err


# ------------------------------------------------------------------ the matrix
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("task", TASKS)
def test_method_trains_its_parameters_and_nothing_else(task, method, task_setup, spy, run_cli, tmp_path):
    recipe = {**task_setup(task), "method": METHODS[method], "train": TRAIN}
    run, err = prepare_and_train(run_cli, tmp_path, recipe)
    model = spy["session"].model
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    changed = {n for n, p in params.items() if not torch.equal(spy["before"][n], p.detach())}
    assert trainable, "nothing was trainable"
    assert sorted(trainable - changed) == [], "trainable parameters that did not move"
    assert sorted(changed - trainable) == [], "frozen parameters that moved"

    manifest = json.loads((run / "train" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["trainable_parameters"] == sum(params[n].numel() for n in trainable)
    assert manifest["total_parameters"] == sum(p.numel() for p in params.values())
    if method == "full":
        assert manifest["trainable_parameters"] == manifest["total_parameters"]
    else:
        assert manifest["trainable_parameters"] < manifest["total_parameters"]
    assert manifest["steps"] == 3 and manifest["tokens_per_second"] > 0

    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for row in steps:
        assert {"step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_second"} <= set(row)
        assert row["tokens_per_second"] > 0 and row["loss"] > 0
    assert (run / "train" / "loss.png").stat().st_size > 1000

    saved = run / "train" / "model"
    if method in PEFT:
        check_adapter(saved, model, task, recipe)
    else:
        check_full_weights(saved, model, task, recipe, method)
    check_reload(saved, model, task, recipe, run)


def check_adapter(saved: Path, model, task: str, recipe: dict):
    """The adapter file holds exactly the trained tensors, the task head among them (modules_to_save)."""
    from peft import get_peft_model_state_dict

    assert not (saved / "model.safetensors").exists()
    adapter = load_file(saved / "adapter_model.safetensors")
    expected = get_peft_model_state_dict(model)
    assert adapter.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(adapter[key], value.detach().cpu()), key
    if recipe["method"]["name"] in ("lora", "dora"):
        lora_b = [v for k, v in adapter.items() if "lora_B" in k]
        assert lora_b and all(v.abs().sum() > 0 for v in lora_b), "lora_B is still zero: no update was saved"
    if recipe["method"]["name"] == "ia3":
        scales = [v for k, v in adapter.items() if "ia3_l" in k]
        assert scales and all(not torch.equal(v, torch.ones_like(v)) for v in scales)
    head = HEADS.get(task)
    if head:
        base = load_file(Path(recipe["model"]["base"]) / "model.safetensors")
        saved_head = {k: v for k, v in adapter.items() if f".{head}." in k}
        assert saved_head, f"the task head ({head}) is not in the adapter: it would be lost on reload"
        for key, value in saved_head.items():
            name = f"{head}.{key.rsplit('.', 1)[-1]}"
            assert not torch.equal(value, base[name]), f"{key} was saved untrained"


def check_full_weights(saved: Path, model, task: str, recipe: dict, method: str):
    """model.safetensors: trained tensors differ from the base, frozen ones are the base's, bit for bit."""
    weights = load_file(saved / "model.safetensors")
    base = load_file(Path(recipe["model"]["base"]) / "model.safetensors")
    live = dict(model.named_parameters())
    common = [k for k in weights if k in base and k in live]
    assert len(common) >= 0.9 * len(live)
    for key in common:
        assert torch.equal(weights[key], live[key].detach()), f"{key}: saved differs from trained"
        assert torch.equal(weights[key], base[key]) != live[key].requires_grad, key
    if method == "freeze":
        by_layer = {}
        for key in common:
            if (index := layer_of(key)) is not None:
                by_layer.setdefault(index, []).append(key)
        first, last = by_layer[min(by_layer)], by_layer[max(by_layer)]
        assert all(torch.equal(weights[k], base[k]) for k in first), "the first layer changed under freeze"
        assert all(not torch.equal(weights[k], base[k]) for k in last), "the last layer did not train"


def layer_of(key: str) -> int | None:
    """The transformer layer a weight belongs to: the first numbered block in its name
    (T5's decoder.block.1.layer.0... is block 1; both stacks count)."""
    match = re.search(r"\.(?:layer|layers|h|block)\.(\d+)\.", key)
    return int(match.group(1)) if match else None


def check_reload(saved: Path, model, task: str, recipe: dict, run: Path):
    """The saved folder, loaded the way evaluate loads it, gives the trained model's outputs."""
    from datasets import load_from_disk

    from adaptctl.models.loading import load_adapted
    from adaptctl.recipe.schema import Recipe
    from adaptctl.tasks import get_task

    label2id = json.loads((run / "prepare" / "labels.json").read_text())["label2id"]
    loaded = load_adapted(saved, get_task(task), Recipe.model_validate(recipe), label2id).eval()
    module = get_task(task)
    split = load_from_disk(str(run / "prepare" / "data"))["validation"]
    keep = [c for c in ("input_ids", "attention_mask", "token_type_ids", "labels", "start_positions", "end_positions")
            if c in split.column_names]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(saved))
    batch = module.collator(tokenizer, Recipe.model_validate(recipe))(split.select_columns(keep).select(range(2)).to_list())
    model.eval()
    with torch.no_grad():
        want, got = model(**batch), loaded(**batch)
    key = "start_logits" if task == "extractive-qa" else "logits"
    torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ LoRA initialisations (method.init)
@pytest.mark.parametrize("init", ["gaussian", "pissa", "olora"])
def test_lora_initialisations_train_and_reload_over_the_unchanged_base(init, task_setup, spy, run_cli, tmp_path):
    """peft's initialisations: the adapters start as peft makes them, and the saved adapter gives the trained
    model's outputs over the base model as it is on disk (pissa and olora change the base in memory, so
    their adapter is saved converted: a plain LoRA of twice the rank)."""
    rank = 4
    recipe = {**task_setup("classification"), "method": {"name": "lora", "init": init, "r": rank}, "train": TRAIN}
    run, _ = prepare_and_train(run_cli, tmp_path, recipe)
    lora_a = [v for k, v in spy["before"].items() if "lora_A" in k]
    lora_b = [v for k, v in spy["before"].items() if "lora_B" in k]
    assert lora_a and lora_b
    if init == "gaussian":  # A ~ N(0, 1/r), B = 0: the model starts as the base
        assert all(v.abs().sum() == 0 for v in lora_b)
        assert abs(torch.cat([v.flatten() for v in lora_a]).std().item() - 1 / rank) < 0.05
    else:  # the principal components (pissa) or a QR factor (olora) of the base weights: B is not zero
        assert all(v.abs().sum() > 0 for v in lora_b)
    saved = run / "train" / "model"
    config = json.loads((saved / "adapter_config.json").read_text())
    assert config["r"] == (rank if init == "gaussian" else 2 * rank)
    check_reload(saved, spy["session"].model, "classification", recipe, run)


# ------------------------------------------------------------------ methods that do not train here
def test_qlora_on_a_cpu_is_a_user_error_naming_qlora(task_setup, run_cli, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the test is about CPU-only machines")
    recipe = {**task_setup("classification"), "method": {"name": "qlora"}, "train": TRAIN}
    path, run = write_recipe(tmp_path, recipe), tmp_path / "run"
    assert run_cli(["prepare", path, "--run-dir", run])[0] == 0
    code, _, err = run_cli(["train", path, "--run-dir", run])
    assert code == 1, err
    assert "qlora" in err and "Traceback" not in err
    assert "hint:" in err and "lora" in err.split("hint:")[1]


def test_prompting_has_nothing_to_train_and_exits_zero(tmp_path, run_cli):
    base = tg.save_tiny_llama(tmp_path / "base")
    data = write_classification_csv(tmp_path / "topics.csv", rows=30)
    recipe = {"name": "tiny-prompting", "task": "classification", "model": {"base": str(base)},
              "data": {"source": str(data), "text": "text", "label": "label"}, "method": {"name": "prompting"}}
    run = tmp_path / "run"
    code, out, err = run_cli(["train", write_recipe(tmp_path, recipe), "--run-dir", run, "--json"])
    assert code == 0, err
    assert re.search(r"nothing to train|trains nothing", err)
    assert json.loads(out)["status"] == "complete"
    assert not (run / "train" / "model").exists()


def test_validate_false_trains_without_a_validation_pass(task_setup, run_cli, tmp_path):
    recipe = {**task_setup("classification"), "method": {"name": "full"}, "train": {**TRAIN, "validate": False}}
    run, _ = prepare_and_train(run_cli, tmp_path, recipe)
    manifest = json.loads((run / "train" / "manifest.json").read_text())
    assert "eval_loss" not in manifest["metrics"] and "train_loss" in manifest["metrics"]
    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert rows and not any("eval_loss" in row for row in rows)


def test_early_stopping_without_validation_is_a_user_error_naming_the_field(task_setup, run_cli, tmp_path):
    recipe = {**task_setup("classification"), "method": {"name": "full"},
              "train": {**TRAIN, "validate": False, "early_stopping_patience": 2}}
    code, _, err = run_cli(["validate", write_recipe(tmp_path, recipe)])
    assert code == 1 and "train.validate" in err and "early stopping" in err and "Traceback" not in err


def test_qlora_loads_the_base_in_4_bit_nf4_on_a_gpu(monkeypatch):
    """What qlora asks from_pretrained for on a CUDA machine (this one has none: the CUDA checks are faked)."""
    import torch

    from adaptctl.methods import get_method, lora

    monkeypatch.setattr(lora, "require_cuda_bitsandbytes", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    options = get_method("qlora").load_options(None)
    quantization = options["quantization_config"]
    assert quantization.load_in_4bit and quantization.bnb_4bit_quant_type == "nf4"
    assert quantization.bnb_4bit_use_double_quant and quantization.bnb_4bit_compute_dtype == torch.bfloat16
    assert options["dtype"] == torch.bfloat16 and options["device_map"] == {"": 1}
    assert get_method("lora").load_options(None) == {}  # the others load as before: fp32 on the CPU


# ------------------------------------------------------------------ full with frozen word embeddings
@pytest.mark.parametrize("task", ["classification", "causal-lm"])
def test_full_with_frozen_embeddings_trains_everything_else(task, task_setup, spy, run_cli, tmp_path):
    recipe = {**task_setup(task), "method": {"name": "full", "freeze_embeddings": True}, "train": TRAIN}
    run, err = prepare_and_train(run_cli, tmp_path, recipe)
    model = spy["session"].model
    embeddings = model.get_input_embeddings().weight
    changed = {n for n, p in model.named_parameters() if not torch.equal(spy["before"][n], p.detach())}
    frozen = {n for n, p in model.named_parameters() if p is embeddings}
    assert len(frozen) == 1 and not frozen & changed, "the word embeddings moved"
    assert len(changed) == len(list(model.parameters())) - 1, "every other weight trains"
    manifest = json.loads((run / "train" / "manifest.json").read_text())
    assert manifest["trainable_parameters"] == manifest["total_parameters"] - embeddings.numel()
    assert "input word embeddings frozen" in err
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is embeddings
    assert ("the output head shares them" in err) == tied


def test_frozen_embeddings_with_added_tokens_is_a_user_error_naming_both(task_setup, run_cli, tmp_path):
    recipe = {**task_setup("classification"), "method": {"name": "full", "freeze_embeddings": True},
              "model": {**task_setup("classification")["model"], "add_tokens": ["zyxwv"]}, "train": TRAIN}
    code, _, err = run_cli(["validate", write_recipe(tmp_path, recipe)])
    assert code == 1 and "model.add_tokens" in err and "freeze_embeddings" in err and "Traceback" not in err
