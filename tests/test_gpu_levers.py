"""The CUDA-only training levers (training/gpu_levers.py): what each selects on a GPU, with the CUDA checks
faked on this CPU machine, and that on a CPU they change nothing and say so."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from adaptctl.core.errors import UserError
from adaptctl.training import gpu_levers


def settings(**asked):
    return SimpleNamespace(**{"padding_free": False, "liger": False, "compile": False, **asked})


@pytest.fixture
def fake_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(gpu_levers, "on_cuda", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))


def test_padding_free_on_cuda_flattens_batches_with_flash_attention(fake_cuda, monkeypatch):
    from transformers import DataCollatorWithFlattening

    monkeypatch.setattr(gpu_levers, "_require", lambda *a: None)  # as if flash-attn were installed
    flattening = gpu_levers.collator(settings(padding_free=True), padded="the task's")
    assert isinstance(flattening, DataCollatorWithFlattening)
    batch = flattening([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]] and batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]  # no token is predicted across the rows' boundary
    assert gpu_levers.load_options(settings(padding_free=True)) == {"attn_implementation": "flash_attention_2"}
    assert gpu_levers.collator(settings(), padded="the task's") == "the task's"


def test_liger_and_tf32_on_cuda_and_a_missing_package_is_a_user_error(fake_cuda):
    assert gpu_levers.training_arguments(settings()) == {"tf32": True}
    assert gpu_levers.training_arguments(settings(compile=True)) == {"tf32": True, "torch_compile": True}
    with pytest.raises(UserError) as info:  # liger-kernel is not installed here
        gpu_levers.training_arguments(settings(liger=True))
    assert "train.liger needs the liger-kernel package" in info.value.message
    assert "pip install liger-kernel" in info.value.hint


def test_on_a_cpu_the_levers_change_nothing_and_say_so(capsys):
    assert gpu_levers.load_options(settings(padding_free=True, liger=True)) == {}
    assert gpu_levers.collator(settings(padding_free=True), padded="the task's") == "the task's"
    assert gpu_levers.training_arguments(settings(padding_free=True, liger=True)) == {}
    assert "train.padding_free and train.liger act on CUDA GPUs only" in capsys.readouterr().err
    assert gpu_levers.training_arguments(settings(compile=True)) == {}
    assert "train.compile acts on CUDA GPUs only" in capsys.readouterr().err


def test_padding_free_for_a_task_that_cannot_flatten_is_a_validate_error(tmp_path, run_cli):
    import tiny_generation as tg

    recipe = tg.recipe_dict(tg.smol_path(), tg.write_pairs(tmp_path / "pairs.jsonl"), "causal-lm", "lora")
    recipe["train"]["padding_free"] = True
    assert run_cli(["validate", tg.write_recipe(tmp_path / "ok.yaml", recipe)])[0] == 0
    recipe.update(task="seq2seq")
    code, _, err = run_cli(["validate", tg.write_recipe(tmp_path / "bad.yaml", recipe)])
    assert code == 1 and "Traceback" not in err
    assert re.search(r"bad.yaml:\d+:\d+: train.padding_free: task seq2seq cannot join its rows", err), err
