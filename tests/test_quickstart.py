"""The quickstart (README.md, docs/getting-started.md), end to end on the real packaged MiniLM: what
`make demo` runs."""

from __future__ import annotations

import json

import pytest

from conftest import PROJECT

pytestmark = pytest.mark.slow


def test_quickstart_learns_exports_and_skips_done_stages(run_cli, tmp_path):
    recipe, run_dir = PROJECT / "recipes" / "quickstart.yaml", tmp_path / "quickstart"
    code, out, err = run_cli(["run", recipe, "--run-dir", run_dir, "--json"])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["stages"] == {s: "complete" for s in ("prepare", "train", "evaluate", "export")}
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    # 4 balanced classes: the majority class (baseline auto for MiniLM) scores about 0.25; the adapted
    # model must be far above it.
    assert metrics["metrics"]["accuracy"] >= 0.85
    assert metrics["baseline"]["kind"] == "majority-class"
    assert metrics["metrics"]["accuracy"] > metrics["baseline"]["metrics"]["accuracy"] + 0.4
    assert (run_dir / "evaluate" / "predictions.base.jsonl").is_file()
    assert (run_dir / "export" / "model" / "model.safetensors").exists()

    code, out, err = run_cli(["run", recipe, "--run-dir", run_dir, "--json"])
    assert code == 0, err
    assert set(json.loads(out)["stages"].values()) == {"skipped"}, "a second run redoes nothing"

    code, out, err = run_cli(["run", recipe, "--run-dir", run_dir, "--json", "--set", "evaluate.batch_size=8"])
    assert code == 0, err
    stages = json.loads(out)["stages"]
    assert stages["train"] == "skipped" and stages["evaluate"] == "complete", "only the changed section reruns"
