"""Tiny random generation models for tests: a 2-layer Llama and a 2-layer T5,
both with the SmolLM2 tokenizer (taken from the packaged model, converted once
into ADAPTCTL_CACHE)."""

from __future__ import annotations

import json
from pathlib import Path

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def smol_path() -> Path:
    from adaptctl.models.resolve import resolve_model

    return resolve_model(SMOL).path


def smol_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smol_path()))


def save_tiny_llama(folder: Path, seed: int = 0, tied: bool = True) -> Path:
    """tied=False: a random output layer of its own, so that greedy decoding says something other than the
    prompt's last token again and again (what tied random embeddings do)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = smol_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=tied)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_t5(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = smol_tokenizer()
    torch.manual_seed(seed)
    pad = tokenizer.pad_token_id
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=pad)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


WORDS = "apple river stone cloud green quick seven table orange window music paper".split()


def write_pairs(path: Path, rows: int = 48, seed: int = 0) -> Path:
    """A small instruction set: repeat the words of the question in reverse order."""
    import random

    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(rows):
            words = rng.sample(WORDS, 3)
            f.write(json.dumps({"question": " ".join(words), "answer": " ".join(reversed(words))}) + "\n")
    return path


def recipe_dict(model: Path, data: Path, task: str = "causal-lm", method: str = "lora", **extra) -> dict:
    recipe = {
        "name": f"tiny-{task}-{method}", "task": task, "seed": 7,
        "model": {"base": str(model)},
        "data": {"source": str(data), "prompt": "Reverse: {question}\nAnswer: ", "response": "{answer}",
                 "splits": {"validation": 0.15, "test": 0.2}, "max_length": 64},
        "method": {"name": method},
        "train": {"max_steps": 6, "batch_size": 8, "learning_rate": 5e-3, "precision": "fp32", "logging_steps": 2},
        "evaluate": {"batch_size": 8, "generation": {"max_new_tokens": 8}},
    }
    for key, value in extra.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def load(recipe: dict):
    from adaptctl.recipe.schema import Recipe

    return Recipe.model_validate(recipe)
