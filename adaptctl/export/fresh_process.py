"""Run one of export's checks in a fresh Python process, as a user would load the files.

The child ends with adaptctl: on Ctrl-C or SIGTERM `subprocess.run` kills it on the way out, and on
Linux the kernel sends it SIGKILL when adaptctl itself dies, even by SIGKILL, so no verifier is
ever left running without its parent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` offline, its output captured."""
    command = [sys.executable, "-m", module, *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          preexec_fn=_die_with_parent if sys.platform == "linux" else None)


def _die_with_parent():
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # another libc: the Ctrl-C/SIGTERM path still ends the child
        pass
