"""data.splits.seed fixes the held-out rows while the training seed changes (comparing seeds on one split)."""

from __future__ import annotations

from conftest import PROJECT

RECIPE = PROJECT / "recipes" / "quickstart.yaml"


def held_out(run_cli, run_dir, *overrides) -> list[list[int]]:
    from datasets import load_from_disk

    code, _, err = run_cli(["prepare", RECIPE, "--run-dir", run_dir, *overrides])
    assert code == 0, err
    return sorted(load_from_disk(str(run_dir / "prepare" / "data"))["test"]["input_ids"])


def test_split_seed_keeps_the_test_rows_across_training_seeds(run_cli, tmp_path):
    fixed = [held_out(run_cli, tmp_path / f"fixed-{seed}", "--set", f"seed={seed}", "--set", "data.splits.seed=7")
             for seed in (1, 2)]
    assert fixed[0] == fixed[1]
    moving = [held_out(run_cli, tmp_path / f"moving-{seed}", "--set", f"seed={seed}") for seed in (1, 2)]
    assert moving[0] != moving[1], "without data.splits.seed the recipe's seed picks the split"
    assert fixed[0] == held_out(run_cli, tmp_path / "seed-7", "--set", "seed=7")
