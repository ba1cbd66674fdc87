"""`precision: auto` decided by measurement (training/precision_probe.py).  It measures on GPUs only; here the
choice between bf16 and fp32 is offered on the CPU (torch runs bf16 autocast there too) so the same code runs."""

from __future__ import annotations

import json

import pytest

import tiny_generation as tg
from adaptctl.training import precision_probe


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return tg.save_tiny_llama(tmp_path_factory.mktemp("probe") / "llama")


def test_the_measurement_leaves_weights_gradients_and_random_state_as_they_were(tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    ids = torch.randint(0, 100, (4, 16))
    torch.manual_seed(3)
    rng = torch.get_rng_state()
    choice = precision_probe.measure(model, {"input_ids": ids, "labels": ids}, ("bf16", "fp32"), "cpu")
    assert set(choice.seconds_per_step) == {"bf16", "fp32"} and choice.how == "measured"
    assert choice.precision == min(choice.seconds_per_step, key=choice.seconds_per_step.__getitem__)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng) and not model.training


def test_a_run_trains_in_the_precision_measured_and_a_resume_keeps_it(tmp_path, tiny_llama, run_cli, monkeypatch):
    monkeypatch.setattr(precision_probe, "options", lambda capable: ("bf16", "fp32"))  # as on a bf16 GPU
    recipe = tg.recipe_dict(tiny_llama, tg.write_pairs(tmp_path / "pairs.jsonl"), train={"precision": "auto", "max_steps": 2})
    code, _, err = run_cli(["train", str(tg.write_recipe(tmp_path / "r.yaml", recipe)), "--run-dir", str(tmp_path / "run")])
    assert code == 0, err
    train = tmp_path / "run" / "train"
    manifest = json.loads((train / "manifest.json").read_text())
    measured = manifest["precision_choice"]["seconds_per_step"]
    assert manifest["precision"] == min(measured, key=measured.__getitem__) and set(measured) == {"bf16", "fp32"}
    assert f"precision {manifest['precision']} (measured: a step took" in err

    # a resumed run does not measure again: it trains in the precision it started in
    kept = json.loads((train / precision_probe.RECORD).read_text())
    again = precision_probe.decide("auto", None, lambda: pytest.fail("measured again"), train, resuming=True)
    assert (again.precision, again.how) == (kept["precision"], "as when the run started")
    assert precision_probe.decide("fp32", None, None, train, resuming=False).how == "recipe"
