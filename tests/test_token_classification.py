"""task: token-classification on a tiny random BERT token classifier (built from a config): CoNLL files
read, word pieces aligned, trained, scored with seqeval, exported, reloaded by plain transformers, and
predict's entity spans equal to evaluate's; LoRA+ through the method spec's optimizer hook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
PEOPLE, PLACES = ["Alice", "Bob", "Carol"], ["Paris", "Berlin", "Oslo"]


def write_conll(path: Path, sentences: int, offset: int = 0) -> Path:
    """Sentences like `yesterday Alice flew to New Paris .` with person and (two-word) location tags."""
    lines = []
    for i in range(offset, offset + sentences):
        person, place = PEOPLE[i % 3], PLACES[(i // 3) % 3]
        for word, tag in (("yesterday", "O"), (person, "B-person"), ("flew", "O"), ("to", "O"),
                          ("New", "B-location"), (place, "I-location"), (".", "O")):
            lines.append(f"{word}\t{tag}")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def save_tiny_token_classifier(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    from adaptctl.models.resolve import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(MINILM).path))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    BertForTokenClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_ner(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ner")
    save_tiny_token_classifier(root / "base")
    write_conll(root / "train.conll", 36)
    write_conll(root / "dev.conll", 6, offset=36)
    write_conll(root / "test.txt", 9, offset=42)
    return root


def ner_recipe(root: Path, method: str, name: str) -> Path:
    recipe = root / f"{name}.yaml"
    recipe.write_text(f"""
name: tiny-ner
task: token-classification
model: {{base: base}}
data:
  source: train.conll
  validation: dev.conll
  test: {{path: test.txt, format: conll}}
  max_length: 32
method: {method}
train: {{epochs: 6, batch_size: 8, learning_rate: 3.0e-3, precision: fp32, validate: false}}
evaluate: {{split: test}}
export: {{verify: false}}
""")
    return recipe


def run_and_check_spans(root: Path, run_cli, method: str, name: str) -> dict:
    """Run every stage; check seqeval's metrics, the export (plain transformers, the run's tags) and that
    predict on evaluate's inputs finds evaluate's entities at the same character offsets."""
    recipe, run_dir = ner_recipe(root, method, name), root / f"run-{name}"
    code, out, err = run_cli(["run", recipe, "--run-dir", run_dir, "--json"])
    assert code == 0, err
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())["metrics"]
    assert set(metrics) >= {"precision", "recall", "f1", "accuracy"}
    assert metrics["f1"] > 0.5, metrics   # learnt: the random head finds none of these entities
    predictions = [json.loads(line) for line in (run_dir / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 9
    # the reference: both entities of every sentence, spans into the joined words
    first = predictions[0]
    assert [(e["type"], e["text"]) for e in first["reference_entities"]] == [("person", "Alice"), ("location", "New Oslo")]
    assert all(first["input"][e["start"]:e["end"]] == e["text"] for e in first["reference_entities"])

    from transformers import AutoModelForTokenClassification

    export = next(p.parent for p in (run_dir / "export").rglob("config.json"))
    model = AutoModelForTokenClassification.from_pretrained(export)
    assert set(model.config.id2label.values()) == {"O", "B-person", "B-location", "I-location"}

    inputs = root / f"inputs-{name}.jsonl"
    inputs.write_text("".join(json.dumps({"text": p["input"]}) + "\n" for p in predictions))
    code, out, err = run_cli(["predict", export, "--input", inputs])
    assert code == 0, err
    predicted = [json.loads(line) for line in out.splitlines()]
    def spans(rows):
        return [[{k: e[k] for k in ("type", "start", "end", "text")} for e in r["entities"]] for r in rows]

    assert spans(predicted) == spans(predictions)
    # the scores too, up to float noise (the batches are padded to other lengths)
    def scores(rows):
        return [e["score"] for r in rows for e in r["entities"]]

    assert scores(predicted) == pytest.approx(scores(predictions), abs=1e-4)
    assert any(p["entities"] for p in predicted)
    for row in predicted:
        assert all(row["input"][e["start"]:e["end"]] == e["text"] for e in row["entities"])
    return metrics


def test_full_fine_tuning_scores_exports_and_predicts_entity_spans(tiny_ner, monkeypatch, run_cli):
    monkeypatch.setenv("ADAPTCTL_CACHE", str(tiny_ner / "cache"))
    run_and_check_spans(tiny_ner, run_cli, "{name: full}", "full")


def test_lora_plus_trains_b_at_ratio_times_a_and_predicts_entity_spans(tiny_ner, monkeypatch, run_cli):
    """method.loraplus_lr_ratio reaches the Trainer through MethodSpec.optimizer: every lora_B weight is in a
    parameter group at 16 x the learning rate of every lora_A weight (a spy on create_optimizer, which runs)."""
    from transformers import Trainer

    monkeypatch.setenv("ADAPTCTL_CACHE", str(tiny_ner / "cache"))
    made = []
    original = Trainer.create_optimizer

    def spy(self, model=None):
        optimizer = original(self, model)
        made.append((dict((self.model if model is None else model).named_parameters()), optimizer))
        return optimizer

    monkeypatch.setattr(Trainer, "create_optimizer", spy)
    run_and_check_spans(tiny_ner, run_cli, "{name: lora, r: 4, alpha: 8, target_modules: all-linear, "
                                           "loraplus_lr_ratio: 16}", "lora")
    (parameters, optimizer), = made
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    a_rates = {rate[id(p)] for name, p in parameters.items() if "lora_A" in name}
    b_rates = {rate[id(p)] for name, p in parameters.items() if "lora_B" in name}
    assert len(a_rates) == len(b_rates) == 1 and b_rates.pop() == pytest.approx(16 * a_rates.pop())
    assert not any("lora" in name for name, p in parameters.items() if "classifier" in name)  # head not wrapped
