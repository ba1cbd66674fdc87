"""Shared test set-up: offline, quiet, one persistent model cache, and CLI runners.

The environment is set at import, before any test module imports
huggingface_hub (which reads HF_HUB_OFFLINE once).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# A persistent cache so the ~17 s SmolLM2 GGUF conversion happens once per machine,
# not once per test session; a caller's own ADAPTCTL_CACHE wins.
os.environ.setdefault("ADAPTCTL_CACHE", "/tmp/adaptctl-test-cache")

import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config):
    # CI (.ci/run) sets ADAPTCTL_REQUIRE_SHARED_DATA: there a missing ../shared/data must fail the run, not
    # quietly skip every real-data test; on a developer's machine without it they skip with the reason.
    if os.environ.get("ADAPTCTL_REQUIRE_SHARED_DATA") == "1" and not SHARED_DATA.is_dir():
        raise pytest.UsageError(f"real data sets not found at {SHARED_DATA}: CI needs ../shared/data beside the checkout")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA} (../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture
def run_cli(capsys):
    """Run `adaptctl.cli.main(args)` in this process -> (exit_code, stdout, stderr)."""
    from adaptctl.core import console
    from adaptctl.cli import main

    def run(args) -> tuple[int, str, str]:
        capsys.readouterr()  # drop whatever earlier steps of the test printed
        code = main([str(a) for a in args])
        console.set_quiet(False)  # --quiet is process state; do not leak it into the next call
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def run_cli_subprocess():
    """Run `python -m adaptctl ARGS` in a fresh process -> CompletedProcess (text)."""

    def run(args, cwd: Path | None = None, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "adaptctl", *map(str, args)], cwd=cwd or PROJECT,
                              capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})

    return run
