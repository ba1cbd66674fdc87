"""task masked-lm (issue 17): whole-word masking, fixed evaluation masks, a fresh tied head on a bare
encoder, the run end to end on a tiny random BERT, and the refusal of models that do not fit the task.
The real-data measure (MiniLM on DialogSum dialogues) is test_masked_lm_on_dialogsum, marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TOPICS = ["the tokenization of unbelievably long words", "a photosynthesis experiment in the greenhouse",
          "the quarterly reconciliation of accounts", "an electroencephalography appointment"]


def minilm_tokenizer():
    from transformers import AutoTokenizer

    from adaptctl.models.resolve import resolve_model

    return AutoTokenizer.from_pretrained(str(resolve_model(MINILM).path))


def save_tiny_bert(folder: Path) -> Path:
    """A bare 2-layer BertModel (no masked-LM head, as all-MiniLM-L6-v2) with MiniLM's tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = minilm_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_recipe(root: Path, base: Path | str, task: str = "masked-lm", **data) -> Path:
    lines = [f"Person1: we talk about {TOPICS[i % 4]} number {i}. Person2: yes, {TOPICS[(i + 1) % 4]}."
             for i in range(60)]
    (root / "domain.jsonl").write_text("".join(json.dumps({"dialogue": line}) + "\n" for line in lines))
    settings = {"source": "domain.jsonl", "text": "{dialogue}", "max_length": 24,
                "splits": {"validation": 0.1, "test": 0.2}, **data}
    recipe = root / "recipe.yaml"
    recipe.write_text(json.dumps({
        "name": "tiny-mlm", "task": task, "seed": 3, "model": {"base": str(base)}, "data": settings,
        "method": {"name": "full"},
        "train": {"max_steps": 6, "batch_size": 8, "learning_rate": 1e-3, "precision": "fp32", "validate": False}}))
    return recipe


# ------------------------------------------------------------------ masking
def test_whole_words_are_masked_together_and_fixed_masks_repeat():
    from datasets import Dataset

    from adaptctl.tasks.masked_lm import WholeWordMasking, encode, fixed_masks

    tokenizer = minilm_tokenizer()
    texts = ["unbelievably electroencephalography tokenization photosynthesis " * 3] * 16
    rows = encode(texts, tokenizer, 64)
    examples = [{k: rows[k][i] for k in ("input_ids", "attention_mask", "token_type_ids", "offset_mapping")}
                for i in range(len(texts))]
    batch = WholeWordMasking(tokenizer, 0.3)(examples)
    masked = batch["labels"] != -100
    assert masked.any()
    for row, original in zip(masked.tolist(), examples):
        pieces = tokenizer.convert_ids_to_tokens(original["input_ids"])
        for i, piece in enumerate(pieces):
            if piece.startswith("##"):  # a word's continuation is masked exactly when the piece before is
                assert row[i] == row[i - 1], (pieces, row)
    assert batch["input_ids"][masked].eq(tokenizer.mask_token_id).all()
    assert not masked[batch["attention_mask"] == 0].any() and not masked[:, 0].any()  # no padding or [CLS]

    class Recipe:  # fixed_masks reads these fields only
        seed = 5

        class data:
            mlm_probability = 0.3

    split = Dataset.from_dict({k: [e[k] for e in examples] for k in examples[0]})
    first, again = fixed_masks(split, tokenizer, Recipe), fixed_masks(split.select(range(8)), tokenizer, Recipe)
    assert first[:8] == again  # a row's mask depends on neither the rows after it nor the call
    assert len({tuple(r["labels"]) for r in first}) > 1  # but rows are not all masked alike


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from adaptctl.core import console
    from adaptctl.cli import main

    root = tmp_path_factory.mktemp("mlm")
    recipe = write_recipe(root, save_tiny_bert(root / "base"))
    code = main(["run", str(recipe), "--run-dir", str(root / "run"), "-q"])
    console.set_quiet(False)
    return code, root


def test_tiny_masked_lm_run_trains_a_tied_head_and_scores_against_the_base(tiny_run):
    from transformers import AutoModelForMaskedLM

    code, root = tiny_run
    assert code == 0
    metrics = json.loads((root / "run/evaluate/metrics.json").read_text())
    assert metrics["task"] == "masked-lm" and metrics["baseline"]["kind"] == "base-model"
    ours, base = metrics["metrics"]["perplexity"], metrics["baseline"]["metrics"]["perplexity"]
    assert 1 < ours < base  # 6 steps at lr 1e-3 on repetitive text already beat a random head
    assert metrics["masking"]["masked_tokens"] > 0 and metrics["masking"]["seed"] == 3
    report = (root / "run/evaluate/report.md").read_text()
    assert "perplexity" in report and "base-model" in report
    exported = AutoModelForMaskedLM.from_pretrained(str(root / "run/export/model"))
    assert exported.cls.predictions.decoder.weight.data_ptr() == exported.bert.embeddings.word_embeddings.weight.data_ptr()


def test_the_log_says_the_head_is_fresh(tmp_path, run_cli):
    recipe = write_recipe(tmp_path, save_tiny_bert(tmp_path / "base"))
    code, _, err = run_cli(["run", recipe, "--run-dir", tmp_path / "run", "--stages", "prepare,train",
                            "--set", "train.max_steps=1"])
    assert code == 0, err
    assert "has no masked-LM head; a fresh one is initialised" in err and "tied to the input embeddings" in err
    stats = json.loads((tmp_path / "run/prepare/stats.json").read_text())
    assert stats["splits"]["train"]["rows"] >= 42  # windows of 24 tokens: at least one per document


# ------------------------------------------------------------------ bad input
def test_masked_lm_on_a_decoder_only_model_is_refused_at_model_base(tmp_path, run_cli):
    from tests.tiny_generation import save_tiny_llama

    recipe = write_recipe(tmp_path, save_tiny_llama(tmp_path / "llama"))
    code, out, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    assert code == 1 and "Traceback" not in err
    assert "model.base" in err and "recipe.yaml" in err and "masked-lm needs an encoder" in err
    assert "LlamaForCausalLM" in err


def test_causal_lm_on_an_encoder_is_refused_at_model_base(tmp_path, run_cli):
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = minilm_tokenizer()
    BertForMaskedLM(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=37)).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    recipe = write_recipe(tmp_path, tmp_path / "bert", task="causal-lm")
    code, out, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "run"])
    assert code == 1 and "Traceback" not in err
    assert "model.base" in err and "causal-lm needs a decoder-only model" in err and "masked-lm" in err


def test_masked_lm_needs_text_and_refuses_a_label(tmp_path, run_cli):
    recipe = write_recipe(tmp_path, MINILM)
    document = json.loads(recipe.read_text())
    document["data"]["label"] = "topic"
    recipe.write_text(json.dumps(document))
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and "data.label" in err and "masked-lm trains on data.text only" in err


# ------------------------------------------------------------------ real data
REAL = ["data.max_train_samples=160", "data.max_eval_samples=60", "data.max_length=64", "train.batch_size=8",
        "train.max_steps=30"]


@pytest.mark.slow
@pytest.mark.timeout(900)  # a guard against a hang; uncontended it takes about a minute and a half
def test_masked_lm_on_dialogsum_beats_the_base_encoder(shared_data, tmp_path):
    """all-MiniLM-L6-v2 continued on DialogSum dev dialogues (bench/recipes/dialogsum-mlm.yaml, smaller):
    the held-out masked perplexity on test dialogues, on the same seeded masks, falls far below the
    base encoder's with its fresh head."""
    from adaptctl.core import console
    from adaptctl.cli import main
    from conftest import PROJECT

    recipe = PROJECT / "bench" / "recipes" / "dialogsum-mlm.yaml"
    code = main(["run", str(recipe), "--run-dir", str(tmp_path / "run"), "--stages", "prepare,train,evaluate",
                 *(arg for option in REAL for arg in ("--set", option))])
    console.set_quiet(False)
    assert code == 0
    document = json.loads((tmp_path / "run/evaluate/metrics.json").read_text())
    ours, base = document["metrics"]["perplexity"], document["baseline"]["metrics"]["perplexity"]
    stats = json.loads((tmp_path / "run/prepare/stats.json").read_text())
    print(f"\nMiniLM masked-lm on DialogSum: {stats['splits']['train']['rows']} train windows, "
          f"{document['num_examples']} test windows, {document['masking']['masked_tokens']} masked tokens, "
          f"30 steps, seed 42: perplexity adapted {ours:.2f}, base {base:.2f}")
    assert ours < base / 10 and ours < 1000


# ------------------------------------------------------------------ chained phases
def test_a_classifier_continues_from_the_masked_lm_run_and_records_the_lineage(tiny_run, tmp_path, run_cli):
    """model.base names the masked-lm run directory: its exported model is the base; the manifest, the
    model card and `adaptctl runs show` give base -> masked-lm run -> this run with each recipe hash."""
    import hashlib

    code, root = tiny_run
    assert code == 0
    rows = ["text,label"] + [f"{TOPICS[i % 2]} item {i},{'a' if i % 2 else 'b'}" for i in range(40)]
    (tmp_path / "labelled.csv").write_text("\n".join(rows) + "\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "name": "tiny-task", "task": "classification", "seed": 3, "model": {"base": str(root / "run")},
        "data": {"source": "labelled.csv", "text": "text", "label": "label", "max_length": 24,
                 "splits": {"validation": 0.1, "test": 0.2}},
        "method": {"name": "full"}, "train": {"max_steps": 2, "batch_size": 8, "precision": "fp32", "validate": False}}))
    code, _, err = run_cli(["run", recipe, "--run-dir", tmp_path / "run"])
    assert code == 0, err
    chain = json.loads((tmp_path / "run/prepare/manifest.json").read_text())["lineage"]
    assert [entry.get("model") or entry["name"] for entry in chain] == [str(root / "base"), "tiny-mlm", "tiny-task"]
    assert chain[1]["model_stage"] == "export" and chain[1]["task"] == "masked-lm"
    parent_hash = hashlib.sha256((root / "run/recipe.yaml").read_bytes()).hexdigest()
    own_hash = hashlib.sha256((tmp_path / "run/recipe.yaml").read_bytes()).hexdigest()
    assert (chain[1]["recipe_hash"], chain[2]["recipe_hash"]) == (parent_hash, own_hash)
    card = (tmp_path / "run/export/model/README.md").read_text()
    assert "## Lineage" in card and "run `tiny-mlm` (masked-lm, full)" in card and parent_hash[:16] in card
    assert f"base_model: {root / 'base'}" in card  # the hub metadata names where the chain started
    code, out, _ = run_cli(["runs", "show", tmp_path / "run"])
    assert code == 0 and "lineage: " in out and "tiny-mlm [masked-lm" in out and "tiny-task [classification" in out


def test_a_run_directory_without_a_complete_model_is_refused_at_model_base(tmp_path, run_cli):
    parent = tmp_path / "parent"
    recipe = write_recipe(tmp_path, save_tiny_bert(tmp_path / "base"))
    assert run_cli(["prepare", recipe, "--run-dir", parent])[0] == 0  # a run that never trained
    document = json.loads(recipe.read_text())
    document["model"]["base"] = str(parent)
    recipe.write_text(json.dumps(document))
    code, _, err = run_cli(["prepare", recipe, "--run-dir", tmp_path / "child"])
    assert code == 1 and "Traceback" not in err
    assert "recipe.yaml:" in err and "model.base" in err and "has no complete model" in err and "hint:" in err


def test_predict_fills_each_mask(tiny_run, tmp_path, run_cli):
    code, root = tiny_run
    assert code == 0
    (tmp_path / "in.txt").write_text("we talk about the [MASK] of [MASK] long words\nno mask here\n")
    code, out, err = run_cli(["predict", root / "run/export/model", "--input", tmp_path / "in.txt"])
    assert code == 0, err
    first, second = [json.loads(line) for line in out.splitlines()]
    assert len(first["fills"]) == 2 and all(len(candidates) == 5 for candidates in first["fills"])
    assert "[MASK]" not in first["prediction"] and first["fills"][0][0]["score"] >= first["fills"][0][1]["score"]
    assert second == {"text": "no mask here", "input": "no mask here", "prediction": "no mask here", "fills": []}


def test_masked_lm_refuses_an_adapter_method(tmp_path, run_cli):
    recipe = write_recipe(tmp_path, MINILM)
    document = json.loads(recipe.read_text())
    document["method"] = {"name": "lora"}
    recipe.write_text(json.dumps(document))
    code, _, err = run_cli(["validate", recipe])
    assert code == 1 and "method.name" in err and "saves an adapter without it" in err and "use method full" in err


def test_freeze_trains_the_masked_lm_head(tmp_path):
    from transformers import AutoModelForMaskedLM

    from adaptctl.methods.freeze import freeze_all_but_last
    from adaptctl.tasks import get_task

    heads = get_task("masked-lm").head_names  # the task's spec names its head (cls)
    model = freeze_all_but_last(AutoModelForMaskedLM.from_pretrained(str(save_tiny_bert(tmp_path / "base"))), 1, heads)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "cls.predictions.transform.dense.weight" in trainable
    assert not any(".layer.0." in name for name in trainable) and any(".layer.1." in name for name in trainable)


def test_a_runs_own_recipe_hash_is_read_from_its_recipe_now(tmp_path):
    """Training again with other settings rewrites recipe.yaml without preparing again: the lineage's
    last entry (the run itself) takes its hash from the recipe.yaml there now."""
    import hashlib

    from adaptctl.core.rundir import run_lineage

    (tmp_path / "prepare").mkdir()
    (tmp_path / "recipe.yaml").write_text("name: a\ntask: masked-lm\n")
    (tmp_path / "prepare/manifest.json").write_text(json.dumps(
        {"status": "complete", "lineage": [{"model": "m"}, {"run": str(tmp_path), "name": "a", "recipe_hash": "old"}]}))
    chain = run_lineage(tmp_path)
    assert chain[0] == {"model": "m"}
    assert chain[1]["recipe_hash"] == hashlib.sha256(b"name: a\ntask: masked-lm\n").hexdigest()
