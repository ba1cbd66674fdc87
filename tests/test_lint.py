"""The checks `make test` runs on the code itself: ruff (errors and likely bugs, pyproject's [tool.ruff]) and
mypy (pyproject's [tool.mypy]), each as the venv's own tool in a subprocess, their output shown on failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    done = _run(str(BIN / "ruff"), "check", "adaptctl", "tests", "bench", "scripts")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing():
    # The repository's .mypy_cache (git-ignored) makes a re-run take seconds instead of a full analysis.
    done = _run(str(BIN / "mypy"), "--cache-dir", str(ROOT / ".mypy_cache"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_package_declares_its_types():
    """pyproject.toml ships py.typed (PEP 561): type checkers of code that imports adaptctl read its annotations."""
    assert (ROOT / "adaptctl" / "py.typed").is_file()
