"""task preference (tasks/preference.py): pairs and HH-RLHF transcripts split into prompt and replies, bad
pairs located at file:line, DPO through TRL on a tiny random Llama with LoRA (the reference is the base
with the adapter off: no copy of the model or the adapter), and evaluate's preference accuracy and margins
beside the base model's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tiny_generation as tg
from adaptctl.data.columns import RowError
from adaptctl.tasks import preference


def hh(turns: list[tuple[str, str]]) -> str:
    return "".join(f"\n\n{who}: {text}" for who, text in turns)


def test_transcripts_split_at_the_last_assistant_turn():
    chosen = hh([("Human", "hi"), ("Assistant", "hello"), ("Human", "help me"), ("Assistant", "Gladly.")])
    rejected = hh([("Human", "hi"), ("Assistant", "hello"), ("Human", "help me"), ("Assistant", "No.")])
    prompt, good, bad = preference.split_pair({"chosen": chosen, "rejected": rejected}, 0)
    assert prompt == hh([("Human", "hi"), ("Assistant", "hello"), ("Human", "help me")]) + "\n\nAssistant:"
    assert (good, bad) == (" Gladly.", " No.")
    assert preference.transcript_messages(prompt) == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "help me"}]


@pytest.mark.parametrize("chosen, rejected, words", [
    (hh([("Human", "a"), ("Assistant", "x")]), hh([("Human", "b"), ("Assistant", "y")]), "do not share"),
    (hh([("Human", "a")]), hh([("Human", "a"), ("Assistant", "y")]), "no assistant turn"),
    (hh([("Human", "a"), ("Assistant", " ")]), hh([("Human", "a"), ("Assistant", "y")]), "data.chosen: the reply is empty"),
    (hh([("Human", "a"), ("Assistant", "same")]), hh([("Human", "a"), ("Assistant", "same")]), "the same reply"),
], ids=["no shared prefix", "no assistant", "empty", "identical"])
def test_bad_pairs_are_refused(chosen, rejected, words):
    with pytest.raises(RowError, match=words) as info:
        preference.split_pair({"chosen": chosen, "rejected": rejected}, 4)
    assert info.value.index == 4


def write_pairs(path: Path, rows: int = 48) -> Path:
    """The chosen reply repeats the question's words reversed; the rejected one says something unrelated."""
    import random

    rng = random.Random(0)
    with path.open("w") as f:
        for _ in range(rows):
            words = rng.sample(tg.WORDS, 3)
            f.write(json.dumps({"question": " ".join(words), "good": " ".join(reversed(words)),
                                "bad": "I will not say."}) + "\n")
    return path


def pair_recipe(model: Path, data: Path, **extra) -> dict:
    recipe = tg.recipe_dict(model, data, task="preference", **extra)
    recipe["data"] = {"source": str(data), "prompt": "Reverse: {question}\nAnswer:", "chosen": " {good}",
                      "rejected": " {bad}", "splits": {"validation": 0.15, "test": 0.2}, "max_length": 48}
    recipe["train"].update(max_steps=8, learning_rate=5e-3)
    recipe["preference"] = {"loss": "dpo", "beta": 0.1}
    return recipe


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return tg.save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def test_dpo_uses_the_base_without_its_adapter_as_reference(tmp_path, llama):
    """TRL's DPOTrainer built as the train stage builds it: no ref model, no "ref" adapter, the parameters
    those of the base model and one adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from adaptctl.methods import get_method
    from adaptctl.training.session import guarded

    recipe = tg.load(pair_recipe(llama, tmp_path / "d.jsonl"))
    tokenizer = AutoTokenizer.from_pretrained(str(llama))
    base = AutoModelForCausalLM.from_pretrained(str(llama))
    base_count = sum(p.numel() for p in base.parameters())
    model = get_method("lora").apply(base, recipe)
    adapter = sum(p.numel() for p in model.parameters() if p.requires_grad)
    plan = preference.trainer(recipe, model)
    assert issubclass(plan.arguments_class, TrainingArguments)
    from datasets import Dataset

    pairs = Dataset.from_dict({"prompt": ["Reverse: a b\nAnswer: "] * 4, "chosen": ["b a"] * 4, "rejected": ["no"] * 4})
    args = plan.arguments_class(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], **plan.arguments)
    trainer = guarded(plan.trainer_class)(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
    assert trainer.ref_model is None and list(model.peft_config) == ["default"]
    assert sum(p.numel() for p in model.parameters()) == base_count + adapter


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, llama):
    from adaptctl.core import console
    from adaptctl.cli import main

    folder = tmp_path_factory.mktemp("dpo")
    data = write_pairs(folder / "pairs.jsonl")
    recipe = tg.write_recipe(folder / "recipe.yaml", pair_recipe(llama, data, evaluate={"compare_with_base": True}))
    code = main(["run", str(recipe), "--run-dir", str(folder / "run"), "--stages", "prepare,train,evaluate"])
    console.set_quiet(False)
    assert code == 0
    return folder / "run"


def test_dpo_pipeline_trains_the_adapter_and_reports_preference_metrics(dpo_run):
    from safetensors.torch import load_file

    adapter = load_file(dpo_run / "train" / "model" / "adapter_model.safetensors")
    assert any(float(v.abs().sum()) > 0 for k, v in adapter.items() if "lora_B" in k)
    assert not (dpo_run / "train" / "model" / "ref").exists()
    document = json.loads((dpo_run / "evaluate" / "metrics.json").read_text())
    metrics, base = document["metrics"], document["baseline"]["metrics"]
    assert set(preference.METRICS) <= set(metrics)
    assert {"preference_accuracy", "mean_margin", "reply_tokens"} <= set(base)
    assert metrics["mean_margin"] > base["mean_margin"]  # 8 DPO steps on the same kind of pair
    assert metrics["reward_margin"] > 0
    rows = [json.loads(line) for line in (dpo_run / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    assert rows[0]["input"].startswith("Reverse: ") and rows[0]["rejected"] == "I will not say."
    log = [json.loads(line) for line in (dpo_run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/accuracies" in row or "rewards/margins" in row for row in log)
    report = (dpo_run / "evaluate" / "report.md").read_text()
    assert "preference_accuracy" in report


def test_predict_replies_to_a_prompt(dpo_run, run_cli, tmp_path):
    question = tmp_path / "ask.jsonl"
    question.write_text(json.dumps({"question": "apple river stone"}) + "\n")  # rendered through data.prompt
    out = tmp_path / "answers.jsonl"
    code, _, err = run_cli(["predict", dpo_run, "--input", question, "--output", out])
    assert code == 0, err
    row = json.loads(out.read_text().splitlines()[0])
    assert isinstance(row["prediction"], str) and row["input"] == "Reverse: apple river stone\nAnswer:"


def test_bad_pair_in_a_file_is_located_at_its_line(run_cli, tmp_path, llama):
    data = tmp_path / "hh.jsonl"
    good = {"chosen": hh([("Human", "q"), ("Assistant", "yes")]), "rejected": hh([("Human", "q"), ("Assistant", "no")])}
    bad = {"chosen": hh([("Human", "q"), ("Assistant", "yes")]), "rejected": hh([("Human", "other"), ("Assistant", "no")])}
    data.write_text("".join(json.dumps(row) + "\n" for row in [good] * 5 + [bad] + [good] * 5))
    recipe = pair_recipe(llama, data)
    recipe["data"] = {"source": str(data), "chosen": "{chosen}", "rejected": "{rejected}", "max_length": 48}
    code, _, err = run_cli(["prepare", tg.write_recipe(tmp_path / "recipe.yaml", recipe), "--run-dir", tmp_path / "run"])
    assert code == 1 and f"{data}:6: data.chosen and data.rejected do not share" in err and "Traceback" not in err


@pytest.mark.parametrize("loss", ["ipo", "orpo", "kto", "simpo"])
def test_every_loss_trains_through_its_trl_trainer(tmp_path, llama, loss):
    """Each preference.loss builds its TRL trainer from the plan and takes two optimizer steps that move the
    adapter (dpo runs through the whole pipeline above)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adaptctl.methods import get_method
    from adaptctl.training.session import guarded

    raw = pair_recipe(llama, tmp_path / "d.jsonl")
    raw["preference"]["loss"] = loss
    recipe = tg.load(raw)
    tokenizer = AutoTokenizer.from_pretrained(str(llama))
    model = get_method("lora").apply(AutoModelForCausalLM.from_pretrained(str(llama)), recipe)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    plan = preference.trainer(recipe, model)
    pairs = Dataset.from_dict({"prompt": [f"Reverse: {w} x\nAnswer:" for w in tg.WORDS[:8]],
                               "chosen": [f" x {w}" for w in tg.WORDS[:8]], "rejected": [" no"] * 8})
    args = plan.arguments_class(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], max_steps=2,
                                per_device_train_batch_size=4, learning_rate=1e-2, remove_unused_columns=False,
                                **plan.arguments)
    trainer = guarded(plan.trainer_class)(model=model, args=args, train_dataset=pairs, processing_class=tokenizer)
    assert getattr(trainer, "ref_model", None) is None and list(model.peft_config) == ["default"]
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n)


def test_dpo_continues_from_an_sft_adapter_run(tmp_path, llama, run_cli):
    """The usual pipeline, SFT -> DPO: model.base names the SFT run, whose train/model is a LoRA adapter.
    It is merged into its base once (into the cache), DPO trains a fresh adapter over that merged model,
    and the lineage names the base, the SFT run and the DPO run."""
    import torch
    from safetensors.torch import load_file

    from adaptctl.models.resolve import resolve_model

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"question": " ".join(w), "answer": " ".join(reversed(w))}) + "\n"
                            for w in zip(tg.WORDS, tg.WORDS[1:], tg.WORDS[2:])))
    sft = tg.write_recipe(tmp_path / "sft.yaml", tg.recipe_dict(llama, rows, name="tiny-sft"))
    code, _, err = run_cli(["train", sft, "--run-dir", tmp_path / "sft"])
    assert code == 0, err
    assert (tmp_path / "sft/train/model/adapter_config.json").is_file()

    merged = resolve_model(str(tmp_path / "sft"))
    assert merged.source == "run:train" and merged.run == (tmp_path / "sft").resolve()
    base, sft_weights = load_file(llama / "model.safetensors"), load_file(merged.path / "model.safetensors")
    changed = [k for k in base if k in sft_weights and not torch.equal(base[k], sft_weights[k])]
    assert changed and all("q_proj" in k or "v_proj" in k for k in changed)  # LoRA's targets, merged in

    dpo = pair_recipe(llama, write_pairs(tmp_path / "pairs.jsonl"), name="tiny-dpo")
    dpo["model"] = {"base": str(tmp_path / "sft")}
    code, _, err = run_cli(["train", tg.write_recipe(tmp_path / "dpo.yaml", dpo), "--run-dir", tmp_path / "dpo"])
    assert code == 0, err
    manifest = json.loads((tmp_path / "dpo/prepare/manifest.json").read_text())
    chain = manifest["lineage"]
    assert [entry.get("model") or entry["name"] for entry in chain] == [str(llama), "tiny-sft", "tiny-dpo"]
    assert chain[1]["model_stage"] == "train" and manifest["model_path"] == str(merged.path)
    assert resolve_model(str(tmp_path / "sft")).path == merged.path  # merged once, found again


def test_a_killed_dpo_run_resumes_to_the_uninterrupted_adapter(tmp_path, llama, run_cli, dpo_run):
    """Resume behaves as for the other tasks: a DPO run killed (SIGKILL) after a checkpoint and run again
    continues from it and ends with the adapter of the uninterrupted run (dpo_run: the same recipe)."""
    import torch
    from safetensors.torch import load_file
    from test_resume import killed_and_resumed

    data = write_pairs(tmp_path / "pairs.jsonl")
    raw = pair_recipe(llama, data, evaluate={"compare_with_base": True})
    raw["train"]["save_every"] = 2
    recipe = tg.write_recipe(tmp_path / "recipe.yaml", raw)
    run = tmp_path / "run"
    manifest = killed_and_resumed(run_cli, recipe, run, tmp_path / "killed.log")
    assert 0 < manifest["resumed_from_step"] < 8 and manifest["steps"] == 8
    resumed = load_file(run / "train" / "model" / "adapter_model.safetensors")
    whole = load_file(dpo_run / "train" / "model" / "adapter_model.safetensors")
    assert resumed.keys() == whole.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=0, atol=1e-5)
