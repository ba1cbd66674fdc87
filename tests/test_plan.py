"""`adaptctl plan`: parameters, memory, steps, tokens and time before a run, on the tiny classifier."""

from __future__ import annotations

import json
import math

import pytest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_classifier import trained_tiny_run

    return trained_tiny_run(tmp_path_factory.mktemp("plan"))


def test_plan_counts_what_train_trains_and_measures_steps(tiny, run_cli, tmp_path):
    recipe, run_dir = tiny
    code, out, err = run_cli(["plan", recipe, "--run-dir", tmp_path / "planned", "--set", "train.max_steps=null",
                              "--set", "train.epochs=3", "--steps", "2", "--json"])
    assert code == 0, err
    plan = json.loads(out)
    trained = json.loads((run_dir / "train" / "manifest.json").read_text())
    assert plan["parameters"] == {"trainable": trained["trainable_parameters"], "total": trained["total_parameters"]}
    stats = json.loads((tmp_path / "planned" / "prepare" / "stats.json").read_text())
    rows = stats["splits"]["train"]["rows"]
    assert plan["train_rows"] == rows and plan["steps"] == 3 * math.ceil(rows / 8)
    assert plan["measured_steps"] == 2 and plan["seconds_per_step"] > 0 and plan["estimated_train_seconds"] > 0
    memory = plan["memory_mb"]
    assert memory["optimizer"] == pytest.approx(2 * memory["gradients"], abs=0.1)
    assert memory["gradients"] == pytest.approx(plan["parameters"]["trainable"] * 4 / 2**20, abs=0.1)
    assert memory["peak"] >= memory["process_before_training"] > memory["weights"] > 0
    assert plan["fits"] is True and plan["worst_batch_tokens"] % 8 == 0
    assert not (tmp_path / "planned" / "train").exists()  # plan trains nothing it keeps
    assert "plan: " in err and "optimizer steps" in err


def test_plan_warns_when_the_estimate_exceeds_the_device(tiny, run_cli, tmp_path, monkeypatch):
    import adaptctl.plan

    monkeypatch.setattr(adaptctl.plan, "_device_memory_mb", lambda: 64.0)
    recipe, _ = tiny
    code, out, err = run_cli(["plan", recipe, "--run-dir", tmp_path / "planned", "--steps", "1", "--json"])
    assert code == 0, err
    assert json.loads(out)["fits"] is False
    assert "exceeds the cpu's memory (64 MB): lower train.batch_size" in err
