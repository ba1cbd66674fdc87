"""LoRA target modules on tiny random models: the default (peft's per-architecture table, q_proj/v_proj on
Llama) and `all-linear` (every linear projection of a Llama, never its lm_head; a BERT classifier's head
trained in full as modules_to_save, never wrapped as LoRA); what peft resolved recorded in the train
manifest and the exported model card."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from test_train_methods import TRAIN, prepare_and_train, task_setup  # noqa: F401  (task_setup is a fixture)

LLAMA_PROJECTIONS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_lora_default_on_a_tiny_llama_names_the_modules_peft_wrapped_in_manifest_and_card(
        task_setup, run_cli, tmp_path):
    recipe = {**task_setup("causal-lm"), "method": {"name": "lora", "r": 2}, "train": TRAIN}
    run, err = prepare_and_train(run_cli, tmp_path, recipe)
    adapted = json.loads((run / "train" / "manifest.json").read_text())["adapted_modules"]
    assert adapted == {"target_modules": ["q_proj", "v_proj"], "wrapped_modules": 4, "modules_to_save": []}
    assert "adapters on 4 modules (q_proj, v_proj)" in err

    code, _, err = run_cli(["export", tmp_path / "recipe.yaml", "--run-dir", run])
    assert code == 0, err
    card = (run / "export" / "model" / "README.md").read_text()
    assert "target_modules=None" not in card
    assert "- Adapted modules: `q_proj`, `v_proj` (4 modules)\n" in card


def test_all_linear_wraps_every_projection_of_a_tiny_llama_but_not_lm_head(task_setup, run_cli, tmp_path):
    recipe = {**task_setup("causal-lm"), "method": {"name": "lora", "r": 2, "target_modules": "all-linear"},
              "train": TRAIN}
    run, _ = prepare_and_train(run_cli, tmp_path, recipe)
    adapted = json.loads((run / "train" / "manifest.json").read_text())["adapted_modules"]
    # 2 layers x 7 projections; lm_head (tied to the embeddings) is left alone
    assert adapted == {"target_modules": LLAMA_PROJECTIONS, "wrapped_modules": 14, "modules_to_save": []}
    adapter = load_file(run / "train" / "model" / "adapter_model.safetensors")
    assert not [k for k in adapter if "lm_head" in k or "embed_tokens" in k]
    assert {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in adapter} == set(LLAMA_PROJECTIONS)


def test_all_linear_on_a_bert_classifier_trains_the_head_in_full_and_does_not_wrap_it(
        task_setup, run_cli, tmp_path):
    recipe = {**task_setup("classification"), "method": {"name": "lora", "r": 2, "target_modules": "all-linear"},
              "train": TRAIN}
    run, _ = prepare_and_train(run_cli, tmp_path, recipe)
    adapted = json.loads((run / "train" / "manifest.json").read_text())["adapted_modules"]
    # query/key/value and the four `dense` layers of each block plus the pooler's; the classifier is saved whole
    assert adapted["target_modules"] == ["dense", "key", "query", "value"]
    assert adapted["wrapped_modules"] == 2 * 6 + 1
    assert adapted["modules_to_save"] == ["classifier"]

    adapter = load_file(run / "train" / "model" / "adapter_model.safetensors")
    head = {k: v for k, v in adapter.items() if ".classifier." in k}
    assert sorted(k.rsplit(".", 1)[-1] for k in head) == ["bias", "weight"], "the head must be saved in full"
    assert not [k for k in head if "lora_" in k], "the head must not be wrapped as LoRA"
    base = load_file(Path(recipe["model"]["base"]) / "model.safetensors")
    trained = next(v for k, v in head.items() if k.endswith("weight"))
    assert not torch.equal(trained, base["classifier.weight"]), "the head did not train"


def test_all_linear_on_a_qa_model_leaves_qa_outputs_to_modules_to_save(task_setup, run_cli, tmp_path):
    # peft's shorthand skips only lm_head and classifier/score heads; adaptctl excludes qa_outputs itself
    recipe = {**task_setup("extractive-qa"), "method": {"name": "lora", "r": 2, "target_modules": "all-linear"},
              "train": TRAIN}
    run, _ = prepare_and_train(run_cli, tmp_path, recipe)
    adapted = json.loads((run / "train" / "manifest.json").read_text())["adapted_modules"]
    assert "qa_outputs" not in adapted["target_modules"] and adapted["modules_to_save"] == ["qa_outputs"]
    adapter = load_file(run / "train" / "model" / "adapter_model.safetensors")
    assert not [k for k in adapter if "qa_outputs" in k and "lora_" in k]
