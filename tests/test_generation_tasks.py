"""causal-lm and seq2seq: tokenization and loss masks, truncation, collators,
batched generation, and the whole prepare -> train -> evaluate pipeline on tiny
random Llama and T5 models (tests/tiny_generation.py)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from unittest import mock

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

import tiny_generation as tg
from adaptctl.tasks import causal_lm, prompting, seq2seq


@pytest.fixture(scope="module")
def tokenizer():
    return tg.smol_tokenizer()


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return tg.save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def t5(tmp_path_factory) -> Path:
    return tg.save_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


def _recipe(**data):
    base = tg.recipe_dict(Path("m"), Path("d.jsonl"))
    base["data"].update(data)
    return tg.load(base)


def _pairs(prompts, responses):
    return Dataset.from_dict({"prompt": prompts, "response": responses, "references": [[r] for r in responses]})


# ------------------------------------------------------------- tokenization
def test_labels_mask_exactly_the_prompt(tokenizer):
    prompts, responses = ["Reverse: a b c\nAnswer: ", "Summarize: the cat sat.\nSummary: "], ["c b a", "A cat sat."]
    out = causal_lm.tokenize(_pairs(prompts, responses), tokenizer, _recipe(), {})
    for row, prompt, response in zip(out, prompts, responses):
        prompt_ids = tokenizer(prompt)["input_ids"]
        n = row["prompt_length"]
        assert n == len(prompt_ids) and row["input_ids"][:n] == prompt_ids
        assert row["labels"][:n] == [-100] * n
        assert row["labels"][n:] == row["input_ids"][n:] and -100 not in row["labels"][n:]
        assert row["input_ids"][-1] == tokenizer.eos_token_id  # the model learns to stop
        assert tokenizer.decode(row["labels"][n:-1]) == response
        assert row["num_tokens"] == len(row["input_ids"]) and row["truncated"] is False


def test_chat_template_trains_only_the_assistant_turn(tokenizer):
    out = causal_lm.tokenize(_pairs(["Hi there"], ["Hello!"]), tokenizer, _recipe(chat_template=True), {})[0]
    n = out["prompt_length"]
    prompt, answer = tokenizer.decode(out["input_ids"][:n]), tokenizer.decode([t for t in out["labels"] if t != -100])
    assert prompt.startswith("<|im_start|>system") and "<|im_start|>user\nHi there<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert answer == "Hello!<|im_end|>\n"
    assert all(t == -100 for t in out["labels"][:n])


def test_fit_keeps_the_response_and_the_end_of_the_prompt():
    prompt, response = list(range(100)), list(range(1000, 1050))
    p, r, cut = causal_lm.fit(prompt, response, 64)
    assert cut and len(p) + len(r) == 64
    assert r == response[:32] and p == prompt[-32:]  # response capped at half, prompt cut from the left
    p, r, cut = causal_lm.fit(prompt, response[:10], 64, head=2)
    assert r == response[:10] and p == prompt[:2] + prompt[-52:]  # the header survives the cut
    assert causal_lm.fit([1, 2], [3], 8) == ([1, 2], [3], False)


def test_truncation_is_counted_and_never_drops_the_response(tokenizer):
    long_prompt = "Summarize: " + " ".join(["word"] * 200) + "\nSummary: "
    recipe = _recipe(max_length=48, chat_template=True)
    out = causal_lm.tokenize(_pairs([long_prompt, "short\n"], ["The end.", "ok"]), tokenizer, recipe, {})
    long, short = out[0], out[1]
    assert long["truncated"] is True and short["truncated"] is False
    assert len(long["input_ids"]) == 48 == long["num_tokens"]
    assert tokenizer.decode([t for t in long["labels"] if t != -100]) == "The end.<|im_end|>\n"
    kept = tokenizer.decode(long["input_ids"][:long["prompt_length"]])
    assert kept.startswith("<|im_start|>system") and kept.endswith("Summary: <|im_end|>\n<|im_start|>assistant\n")


def test_plain_text_trains_every_token_and_windows_long_documents(tokenizer):
    recipe = tg.load({**tg.recipe_dict(Path("m"), Path("d.txt")),
                      "data": {"source": "d.txt", "text": "text", "max_length": 16}})
    text = " ".join(f"token{i}" for i in range(30))
    out = causal_lm.tokenize(Dataset.from_dict({"text": [text, "short one"]}), tokenizer, recipe, {})
    whole = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    windows = [row["input_ids"] for row in out][:-1]
    joined = sum(windows, [])
    # every token once, in order (a lone final token, with nothing to predict it from, is the only one left out)
    assert joined == whole[:len(joined)] and len(whole) - len(joined) <= (1 if len(whole) % 16 == 1 else 0)
    assert all(len(w) <= 16 for w in windows) and len(windows) > 1
    assert all(row["labels"] == row["input_ids"] and not row["truncated"] for row in out)


def test_collator_pads_labels_with_minus_100(tokenizer):
    rows = causal_lm.tokenize(_pairs(["a\n", "a much longer prompt here\n"], ["b", "c d e"]), tokenizer, _recipe(), {})
    features = [{k: r[k] for k in causal_lm.MODEL_INPUTS} for r in rows]
    batch = causal_lm.collator(tokenizer, _recipe())(features)
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and batch["labels"].shape == batch["input_ids"].shape
    short = len(features[0]["input_ids"])
    assert (batch["labels"][0, short:] == -100).all() and (batch["attention_mask"][0, short:] == 0).all()
    assert batch["labels"][0, :short].tolist() == features[0]["labels"]


def test_numbered_reference_columns_become_references(tokenizer):
    recipe = tg.load({**tg.recipe_dict(Path("m"), Path("d.jsonl")),
                      "data": {"source": "d.jsonl", "prompt": "{dialogue}\nSummary: ", "response": "{summary}"}})
    test = Dataset.from_dict({"dialogue": ["A: hi"], "summary1": ["one"], "summary2": ["two"], "summary3": [""]})
    ds, dropped = causal_lm.canonicalize(test, recipe, "test.jsonl")
    assert ds[0]["response"] == "one" and ds[0]["references"] == ["one", "two"] and dropped == {"empty": 0}
    dev = Dataset.from_dict({"dialogue": ["A: hi", "B: yo"], "summary": ["one", " "]})
    ds, dropped = causal_lm.canonicalize(dev, recipe, "dev.jsonl")
    assert ds["references"] == [["one"]] and dropped == {"empty": 1}


def test_seq2seq_tokenize_and_collate(tokenizer):
    recipe = _recipe(max_length=12)
    out = seq2seq.tokenize(_pairs(["Reverse: a b c", " ".join(["x"] * 40)], ["c b a", "y"]), tokenizer, recipe, {})
    assert out[0]["input_ids"] == tokenizer("Reverse: a b c")["input_ids"]
    assert out[0]["labels"] == tokenizer("c b a")["input_ids"] + [tokenizer.eos_token_id]
    assert out[0]["truncated"] is False and out[1]["truncated"] is True and len(out[1]["input_ids"]) == 12
    batch = seq2seq.collator(tokenizer, recipe)([{k: r[k] for k in seq2seq.MODEL_INPUTS} for r in out])
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["labels"].shape[1] % 8 == 0
    assert (batch["labels"][1, len(out[1]["labels"]):] == -100).all()


# --------------------------------------------------------------- inference
def test_batched_left_padded_generation_matches_one_by_one(llama, tokenizer):
    from types import SimpleNamespace

    from adaptctl.evaluation.generation import generate

    model = causal_lm.SPEC.model_class().from_pretrained(str(llama)).eval()
    prompts = [tokenizer(t)["input_ids"] for t in ("Hello", "A much longer prompt than the first one", "Mid size one")]
    settings = SimpleNamespace(max_new_tokens=6, num_beams=1, do_sample=False, temperature=1.0)
    kwargs = dict(pad_id=tokenizer.pad_token_id, eos_ids=[tokenizer.eos_token_id], encoder_decoder=False, precision="fp32")
    together, speed = generate(model, prompts, settings, batch_size=3, **kwargs)
    alone = [generate(model, [p], settings, batch_size=1, **kwargs)[0][0] for p in prompts]
    assert together == alone and all(0 < len(o) <= 6 for o in together)
    assert speed["generated_tokens"] == sum(map(len, together))


def test_example_losses_equal_the_models_own_loss(llama, tokenizer):
    from adaptctl.evaluation.generation import example_losses

    model = causal_lm.SPEC.model_class().from_pretrained(str(llama)).eval()
    rows = causal_lm.tokenize(_pairs(["Reverse: a b\nAnswer: ", "x\n"], ["b a", "a longer answer"]), tokenizer,
                              _recipe(), {}).select_columns(list(causal_lm.MODEL_INPUTS)).to_list()
    losses = example_losses(model, rows, tokenizer.pad_token_id, encoder_decoder=False, batch_size=2, precision="fp32")
    for row, (total, n) in zip(rows, losses):
        with torch.no_grad():
            expected = model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])).loss
        assert n == sum(t != -100 for t in row["labels"][1:])
        assert total / n == pytest.approx(float(expected), rel=1e-4)


def test_example_losses_skip_prompt_tuning_virtual_tokens(llama, tokenizer):
    import peft

    from adaptctl.evaluation.generation import example_losses

    base = causal_lm.SPEC.model_class().from_pretrained(str(llama))
    model = peft.get_peft_model(base, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    row = causal_lm.tokenize(_pairs(["Reverse: a b\nAnswer: "], ["b a"]), tokenizer, _recipe(), {})[0]
    (total, n), = example_losses(model, [{k: row[k] for k in causal_lm.MODEL_INPUTS}], tokenizer.pad_token_id,
                                 encoder_decoder=False, batch_size=1, precision="fp32")
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])).loss
    assert total / n == pytest.approx(float(expected), rel=1e-4)


# ---------------------------------------------------------------- pipeline
def _run_pipeline(run_cli, tmp_path, model, task, method, **extra) -> tuple[Path, dict]:
    data = tg.write_pairs(tmp_path / "pairs.jsonl")
    recipe = tg.write_recipe(tmp_path / "recipe.yaml", tg.recipe_dict(model, data, task, method, **extra))
    run_dir = tmp_path / "run"
    stages = "prepare,evaluate" if method == "prompting" else "prepare,train,evaluate"
    code, out, err = run_cli(["run", recipe, "--run-dir", run_dir, "--stages", stages, "--json"])
    assert code == 0, err
    return run_dir, json.loads((run_dir / "evaluate" / "metrics.json").read_text())


def _changed(before: dict, after: dict, names) -> bool:
    return any(not torch.equal(before[n], after[n]) for n in names)


GENERATION_METRICS = {"loss", "perplexity", "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf", "exact_match"}


@pytest.mark.parametrize("method", ["lora", "full"])
def test_causal_lm_pipeline(run_cli, tmp_path, llama, method):
    run_dir, metrics = _run_pipeline(run_cli, tmp_path, llama, "causal-lm", method,
                                     evaluate={"compare_with_base": True})
    assert GENERATION_METRICS <= set(metrics["metrics"]) and metrics["num_examples"] == 10
    assert metrics["baseline"]["kind"] == "zero-shot-prompting"
    assert metrics["metrics"]["loss"] < metrics["baseline"]["metrics"]["loss"]  # trained on the responses
    assert metrics["generation_tokens_per_second"] > 0
    model_dir = run_dir / "train" / "model"
    if method == "lora":
        adapter = load_file(model_dir / "adapter_model.safetensors")
        assert any(float(v.abs().sum()) > 0 for k, v in adapter.items() if "lora_B" in k)  # B starts at zero
    else:
        before, after = load_file(llama / "model.safetensors"), load_file(model_dir / "model.safetensors")
        assert _changed(before, after, [k for k in before if "layers" in k])
    rows = [json.loads(line) for line in (run_dir / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    assert {"input", "reference", "prediction", "score"} <= set(rows[0]) and rows[0]["input"].startswith("Reverse: ")


@pytest.mark.parametrize("method", ["full", "lora"])
def test_seq2seq_pipeline(run_cli, tmp_path, t5, method):
    run_dir, metrics = _run_pipeline(run_cli, tmp_path, t5, "seq2seq", method,
                                     evaluate={"compare_with_base": True}, train={"max_steps": 8})
    assert GENERATION_METRICS <= set(metrics["metrics"])
    assert metrics["metrics"]["loss"] < metrics["baseline"]["metrics"]["loss"]
    model_dir = run_dir / "train" / "model"
    if method == "lora":
        adapter = load_file(model_dir / "adapter_model.safetensors")
        assert any(float(v.abs().sum()) > 0 for k, v in adapter.items() if "lora_B" in k)
    else:
        before, after = load_file(t5 / "model.safetensors"), load_file(model_dir / "model.safetensors")
        assert _changed(before, after, [k for k in before if "block" in k])


def test_prompting_few_shot_pipeline(run_cli, tmp_path, llama):
    run_dir, metrics = _run_pipeline(run_cli, tmp_path, llama, "causal-lm", "prompting",
                                     evaluate={"few_shot": 2})
    assert GENERATION_METRICS <= set(metrics["metrics"]) and "baseline" not in metrics
    assert metrics["model"].startswith("prompting")


def test_few_shot_prompts_hold_k_training_examples(tokenizer, monkeypatch):
    from adaptctl.evaluation import generation

    recipe = _recipe()
    recipe.evaluate.few_shot = 3
    train = _pairs([f"Reverse: w{i} v{i}\nAnswer: " for i in range(10)], [f"v{i} w{i}" for i in range(10)])
    test = causal_lm.tokenize(_pairs(["Reverse: p q\nAnswer: "], ["q p"]), tokenizer, recipe, {})
    seen = []
    monkeypatch.setattr(generation, "evaluate_generation",
                        lambda model, tok, rows, prompts, *a, **k: seen.append(tok.decode(prompts[0])) or
                        generation.EvalResult(metrics={}))
    for _ in range(2):
        causal_lm.evaluate(None, tokenizer, test, recipe, {}, train_split=train)
    shots = [f"Reverse: w{i} v{i}\nAnswer: v{i} w{i}\n\n" for i in range(10) if f"w{i} v{i}\n" in seen[0]]
    assert len(shots) == 3 and seen[0].endswith("Reverse: p q\nAnswer: ")
    assert all(shot in seen[0] for shot in shots)  # each example with its answer
    expected = prompting.plain_prompt(prompting.draw_shots(train, 3, recipe.seed), "Reverse: p q\nAnswer: ")
    assert seen[0] == expected
    assert seen[0] == seen[1]  # the same examples every time for the same seed


def test_continued_pretraining_on_plain_text(run_cli, tmp_path, llama):
    corpus = tmp_path / "notes.txt"
    corpus.write_text("".join(f"Ticket {i}: the printer on floor {i % 4} is out of toner again.\n" for i in range(40)))
    recipe = tg.recipe_dict(llama, corpus, method="full")
    recipe["data"] = {"source": str(corpus), "text": "text", "max_length": 16, "splits": {"validation": 0.1, "test": 0.2}}
    path = tg.write_recipe(tmp_path / "recipe.yaml", recipe)
    code, out, err = run_cli(["run", path, "--run-dir", tmp_path / "run", "--stages", "prepare,train,evaluate",
                              "--set", "evaluate.compare_with_base=true"])
    assert code == 0, err
    document = json.loads((tmp_path / "run" / "evaluate" / "metrics.json").read_text())
    assert set(document["metrics"]) == {"loss", "perplexity"}
    assert document["metrics"]["loss"] < document["baseline"]["metrics"]["loss"]
    stats = json.loads((tmp_path / "run" / "prepare" / "stats.json").read_text())
    assert stats["splits"]["train"]["truncated"] == 0 and stats["splits"]["train"]["rows"] > 28  # windows, not cuts


def test_generation_casts_an_adapter_models_frozen_weights_once_not_at_every_token(llama, tokenizer):
    """Under bf16 autocast a LoRA model's frozen base weights were cast to bf16 at every forward, that is at
    every generated token (autocast caches no cast of a frozen weight, nor any under inference_mode);
    weights_cast_once keeps one cast per weight for the whole generation, with the same tokens, and
    gives the frozen weights their flags back."""
    from peft import LoraConfig, get_peft_model
    from torch.utils._python_dispatch import TorchDispatchMode
    from transformers import AutoModelForCausalLM

    from adaptctl.evaluation.generation import generate

    class CountCasts(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.casts = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.ops.aten.to.dtype and args[1] == torch.bfloat16 and args[0].dim() == 2:
                self.casts += 1  # a weight matrix cast to bf16
            return func(*args, **kwargs)

    base = AutoModelForCausalLM.from_pretrained(str(llama), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).eval()
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    settings = tg.load(tg.recipe_dict(Path("m"), Path("d.jsonl"))).evaluate.generation.model_copy(
        update={"max_new_tokens": 12, "num_beams": 1, "do_sample": False})
    prompts, runs = [[5, 6, 7, 8], [9, 10, 11]], {}
    for once in (True, False):
        lever = contextlib.nullcontext() if once else \
            mock.patch("adaptctl.evaluation.inference.weights_cast_once", lambda m: torch.inference_mode())
        with lever, CountCasts() as counter:
            generated = generate(model, prompts, settings, pad_id=tokenizer.pad_token_id,
                                 eos_ids=[tokenizer.eos_token_id], encoder_decoder=False,
                                 batch_size=2, precision="bf16")[0]
        runs[once] = (generated, counter.casts)
    (cached, cached_casts), (uncached, uncached_casts) = runs[True], runs[False]
    assert cached == uncached and any(cached)  # the same tokens either way
    assert uncached_casts > 5 * cached_casts  # 12 forwards' casts of every weight, against one
    assert {name for name, p in model.named_parameters() if not p.requires_grad} == frozen
