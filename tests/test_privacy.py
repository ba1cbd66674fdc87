"""train.privacy (DP-SGD through Opacus): one step of LoRA training on a tiny model equals the step computed
by hand (each example's gradient clipped, summed, the same generator's noise added, averaged: Opacus #820
reported LoRA updates silently corrupted with recent peft); the epsilon spent is logged and recorded, and a
resumed run reports the undisturbed run's; settings that break the guarantee are refused at their field."""

from __future__ import annotations

import copy
import json
import signal
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).parent))

NOISE_SEED, LEARNING_RATE, CLIP = 1234, 0.5, 0.05


# ------------------------------------------------------------ one step by hand
def tiny_classifier(lora: bool = True):
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3)
    model = BertForSequenceClassification(config)
    if lora:
        model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"], task_type="SEQ_CLS"))
    rows = {"input_ids": torch.randint(1, 60, (24, 6)), "labels": torch.randint(0, 3, (24,))}
    return model, rows


def tiny_full_classifier():
    """Every weight trained, the position embeddings too (BERT's default position ids are one row for the batch)."""
    return tiny_classifier(lora=False)


def tiny_lora_llama():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=True)
    model = get_peft_model(LlamaForCausalLM(config),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    ids = torch.randint(0, 50, (24, 8))
    labels = ids.clone()
    labels[:, :3] = -100   # the prompt: no loss
    labels[0, 3:6] = -100  # examples train different numbers of tokens: each is its own mean
    return model, {"input_ids": ids, "labels": labels}


def own_loss(model, row: dict, causal: bool) -> torch.Tensor:
    """One example's loss, from that example alone."""
    logits = model(input_ids=row["input_ids"][None]).logits[0]
    if not causal:
        return F.cross_entropy(logits[None], row["labels"][None])
    targets = row["labels"][1:]
    keep = targets != -100
    return F.cross_entropy(logits[:-1][keep], targets[keep])


def step_by_hand(model, batch: dict, params: list[str], causal: bool, sigma: float, expected_batch: int) -> dict:
    """The DP-SGD update of SGD at LEARNING_RATE: per-example gradients clipped to CLIP, summed, Gaussian noise
    of std sigma x CLIP from a generator seeded as the trainer's, divided by the expected batch size."""
    named = dict(model.named_parameters())
    total = {name: torch.zeros_like(named[name]) for name in params}
    factors = []
    for i in range(batch["input_ids"].shape[0]):
        model.zero_grad()
        own_loss(model, {k: v[i] for k, v in batch.items()}, causal).backward()
        norm = torch.sqrt(sum(named[name].grad.pow(2).sum() for name in params))
        factor = min(1.0, CLIP / (norm.item() + 1e-6))  # Opacus' flat clipping (its 1e-6 keeps 0 / 0 away)
        factors.append(factor)
        for name in params:
            total[name] += factor * named[name].grad
    assert min(factors) < 1.0, "CLIP should bind for some example, or clipping goes untested"
    noise = torch.Generator().manual_seed(NOISE_SEED)
    return {name: -LEARNING_RATE * (total[name] + torch.normal(0, sigma * CLIP, total[name].shape, generator=noise))
            / expected_batch for name in params}


@pytest.mark.parametrize("build, causal", [(tiny_classifier, False), (tiny_lora_llama, True), (tiny_full_classifier, False)],
                         ids=["classification-lora", "causal-lm-lora", "classification-full"])
def test_a_dp_sgd_step_is_the_step_computed_by_hand(build, causal, tmp_path, monkeypatch):
    model, rows = build()
    before = copy.deepcopy(model)
    trainer = one_step_trainer(model, rows, causal, tmp_path, monkeypatch)
    seen = []
    compute_loss = trainer.compute_loss
    trainer.compute_loss = lambda m, inputs, **kw: seen.append(dict(inputs)) or compute_loss(m, inputs, **kw)
    trainer.train()

    optimizer = trainer._dp_optimizer
    assert optimizer.expected_batch_size == 6 and trainer.spent().sample_rate == pytest.approx(1 / 4)
    assert trainer.spent().steps == 1 and optimizer.noise_multiplier == 0.7
    names = {id(p): n for n, p in model.named_parameters()}
    params = [names[id(p)] for p in optimizer.params]  # the order the noise is drawn in
    assert all(p.requires_grad for p in optimizer.params)
    batch = {k: v.cpu() for k, v in seen[0].items() if k in rows}
    expected = step_by_hand(before, batch, params, causal, optimizer.noise_multiplier, 6)
    after, start = dict(model.named_parameters()), dict(before.named_parameters())
    for name in params:
        moved = after[name].detach() - start[name].detach()
        torch.testing.assert_close(moved, expected[name], rtol=1e-4, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")
    lora_b = [n for n in params if "lora_B" in n]
    assert all(after[n].abs().max() > 0 for n in lora_b), "lora_B starts at zero and must move"
    assert bool(lora_b) == (build is not tiny_full_classifier)


def test_an_empty_poisson_batch_takes_a_step_of_noise_alone(tmp_path, monkeypatch):
    """Poisson sampling may draw no row at all (small data, small batches): BERT cannot run on 0 rows, and the
    step must still add noise and count for the accountant."""
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    monkeypatch.setattr(UniformWithReplacementSampler, "__iter__", lambda self: iter([[]]))
    model, rows = tiny_classifier()
    before = copy.deepcopy(model)
    trainer = one_step_trainer(model, rows, False, tmp_path, monkeypatch)
    trainer.train()

    optimizer = trainer._dp_optimizer
    assert trainer.spent().steps == 1 and trainer.spent().epsilon > 0
    names = {id(p): n for n, p in model.named_parameters()}
    noise = torch.Generator().manual_seed(NOISE_SEED)
    after, start = dict(model.named_parameters()), dict(before.named_parameters())
    for param in optimizer.params:
        name = names[id(param)]
        expected = -LEARNING_RATE * torch.normal(0, 0.7 * CLIP, param.shape, generator=noise) / 6
        torch.testing.assert_close(after[name].detach() - start[name].detach(), expected, rtol=1e-4, atol=1e-7)


def one_step_trainer(model, rows: dict, causal: bool, tmp_path, monkeypatch):
    """A private Trainer for one SGD step, batches of 6 expected, noise multiplier 0.7 from a seeded generator."""
    from datasets import Dataset
    from transformers import TrainingArguments, default_data_collator

    from adaptctl.recipe.schema import Privacy
    from adaptctl.training import privacy
    from adaptctl.training.privacy import private
    from adaptctl.training.session import GuardedTrainer

    # the step, not the calibration (Opacus' search, seconds of CPU, run by the end-to-end test below)
    monkeypatch.setattr(privacy, "noise_multiplier", lambda *args: 0.7)
    data = Dataset.from_dict({k: v.tolist() for k, v in rows.items()})
    args = TrainingArguments(output_dir=str(tmp_path), optim="sgd", learning_rate=LEARNING_RATE, max_steps=1,
                             lr_scheduler_type="constant", per_device_train_batch_size=6, max_grad_norm=0.0,
                             weight_decay=0.0, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
                             remove_unused_columns=False, logging_strategy="no")
    trainer = private(GuardedTrainer)(model=model, args=args, train_dataset=data, data_collator=default_data_collator)
    trainer.privacy = Privacy(epsilon=4.0, max_grad_norm=CLIP, accountant="rdp")
    trainer.response_only_logits = causal
    trainer.noise_generator = torch.Generator().manual_seed(NOISE_SEED)
    return trainer


# ------------------------------------------------------------ a private run end to end
PRIVATE_TRAIN = {"epochs": 1, "batch_size": 4, "precision": "fp32", "validate": False, "logging_steps": 1,
                 "save_every": 3, "privacy": {"epsilon": 3.0, "accountant": "rdp"}}


def private_recipe(root: Path, **train) -> Path:
    """The tiny LoRA classifier of tests/tiny_classifier.py (27 training rows) trained with DP-SGD."""
    from tiny_classifier import tiny_classifier_recipe

    path = tiny_classifier_recipe(root)
    content = yaml.safe_load(path.read_text())
    content["train"] = {**PRIVATE_TRAIN, **train}
    content["export"] = {"verify": False}  # the card is what is checked here; export's reload is tested elsewhere
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.fixture(scope="module")
def private_run(tmp_path_factory) -> tuple[Path, Path]:
    from adaptctl.cli import main

    root = tmp_path_factory.mktemp("private")
    recipe = private_recipe(root)
    assert main(["run", str(recipe), "--run-dir", str(root / "run"), "-q"]) == 0
    return recipe, root / "run"


def epsilons(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["epsilon"] for r in rows if "loss" in r}


def test_the_epsilon_spent_is_logged_and_recorded_in_manifest_metrics_report_and_card(private_run):
    _, run = private_run
    spent = json.loads((run / "train" / "manifest.json").read_text())["privacy"]
    assert spent["steps"] == 7 and spent["training_rows"] == 27 and spent["delta"] == 1e-3  # below 1/27
    assert 2.7 < spent["epsilon"] <= 3.0, "the noise is calibrated to spend the target over the run's steps"
    logged = epsilons(run)
    assert sorted(logged) == list(range(1, 8)) and list(logged.values()) == sorted(logged.values())
    assert logged[7] == spent["epsilon"]
    evaluation = json.loads((run / "evaluate" / "metrics.json").read_text())
    assert evaluation["privacy"] == spent
    assert f"epsilon {spent['epsilon']:.3g} (target 3)" in (run / "evaluate" / "report.md").read_text()
    card = (run / "export" / "model" / "README.md").read_text()
    assert "Trained with DP-SGD" in card and "not the base model's pretraining data" in card
    assert (run / "train" / "checkpoints" / "checkpoint-6" / "privacy.json").is_file()


def test_a_resumed_private_run_reports_the_epsilon_of_the_undisturbed_one(private_run, run_cli, tmp_path, monkeypatch):
    from test_resume import signal_during_step

    from adaptctl.training import privacy
    from adaptctl.training.session import TrainingSession

    _, undisturbed = private_run
    recipe, run = private_recipe(tmp_path), tmp_path / "run"
    # the undisturbed run's calibration (seconds of Opacus' search, twice more otherwise): its exact noise multiplier
    ledger = undisturbed / "train" / "checkpoints" / "checkpoint-6" / "privacy.json"
    sigma = json.loads(ledger.read_text())["noise_multiplier"]
    monkeypatch.setattr(privacy, "noise_multiplier", lambda *args: sigma)
    build = TrainingSession.build_trainer
    monkeypatch.setattr(TrainingSession, "build_trainer", signal_during_step(signal.SIGINT, 5))  # Ctrl-C in step 5
    code, _, err = run_cli(["train", recipe, "--run-dir", run])
    assert code == 130, err
    ledger = json.loads((run / "train" / "checkpoints" / "checkpoint-5" / "privacy.json").read_text())
    assert sum(entry[2] for entry in ledger["history"]) == 5
    monkeypatch.setattr(TrainingSession, "build_trainer", build)
    code, _, err = run_cli(["train", recipe, "--run-dir", run])
    assert code == 0 and "resuming from" in err, err
    assert epsilons(run) == epsilons(undisturbed)
    spent, expected = (json.loads((r / "train" / "manifest.json").read_text())["privacy"] for r in (run, undisturbed))
    assert spent == expected


# ------------------------------------------------------------ what breaks the guarantee is refused
@pytest.mark.parametrize("change, field, words", [
    ({"train": {"gradient_accumulation": 2}}, "train.gradient_accumulation", "once per Poisson-sampled batch"),
    ({"train": {"precision": "fp16"}}, "train.precision", "scales the loss"),
    ({"train": {"gradient_checkpointing": True}}, "train.gradient_checkpointing", "twice"),
    ({"method": {"name": "ia3"}}, "train.privacy", "classification: full, freeze, lora"),
    ({"model": {"add_tokens": {"from_data": 5}}, "method": {"name": "full"}}, "model.add_tokens", "mined"),
], ids=["accumulation", "fp16", "checkpointing", "untested-method", "mined-words"])
def test_validate_refuses_settings_that_break_the_guarantee_at_their_field(change, field, words, tmp_path, run_cli):
    path = private_recipe(tmp_path)
    content = yaml.safe_load(path.read_text())
    for section, values in change.items():
        content[section] = values if section == "method" else {**content[section], **values}
    path.write_text(yaml.safe_dump(content))
    code, _, err = run_cli(["validate", path])
    assert code == 1 and f"{field}: " in err and words in err, err
    assert "Traceback" not in err


def test_train_refuses_what_only_the_data_decides_at_the_recipe_line(tmp_path, run_cli):
    for train, field, words in [({"batch_size": 27}, "train.batch_size", "leaves nothing to sample"),
                                ({"privacy": {"epsilon": 3.0, "delta": 0.05}}, "train.privacy.delta",
                                 "not below 1 / training rows")]:
        path = private_recipe(tmp_path, **train)
        code, _, err = run_cli(["train", path, "--run-dir", tmp_path / "run"])
        assert code == 1 and "recipe.yaml:" in err and f"{field}: " in err and words in err, err
        assert not (tmp_path / "run" / "train" / "model").exists()
