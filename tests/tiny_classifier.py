"""A tiny random BERT classifier (2 layers, hidden 32, MiniLM's tokenizer) and a LoRA recipe over it,
for tests that need a trained run without the cost of a real model."""

from __future__ import annotations

from pathlib import Path

WORDS = {"pos": "great lovely happy", "neg": "awful broken sad"}


def trained_tiny_run(root: Path) -> tuple[Path, Path]:
    """(recipe, run directory) of a LoRA run of the tiny classifier, trained and evaluated but not exported."""
    from adaptctl.cli import main

    recipe = tiny_classifier_recipe(root)
    assert main(["run", str(recipe), "--run-dir", str(root / "run"), "--stages", "prepare,train,evaluate", "-q"]) == 0
    return recipe, root / "run"


def tiny_classifier_recipe(root: Path) -> Path:
    """root/base (the model), root/data.csv and root/recipe.yaml (prepare, train, evaluate; no export)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from adaptctl.models.resolve import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37)
    BertForSequenceClassification(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    rows = ["text,label"] + [f"{WORDS[lab]} item {i},{lab}" for i in range(20) for lab in WORDS]
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    recipe = root / "recipe.yaml"
    recipe.write_text(f"""
name: tiny-classifier
task: classification
model: {{base: {root / 'base'}}}
data: {{source: data.csv, text: text, label: label, splits: {{validation: 0.1, test: 0.2}}, max_length: 32}}
method: {{name: lora, r: 4, alpha: 8, target_modules: [query, value]}}
train: {{max_steps: 2, batch_size: 8, precision: fp32, validate: false}}
""")
    return recipe
