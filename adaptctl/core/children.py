"""The processes adaptctl starts (a sweep's workers, a distributed launcher), stopped with it.

Each child runs in a session of its own, so a Ctrl-C at the terminal reaches adaptctl alone, which then
sends every child one SIGTERM: the child stops as adaptctl does (a checkpoint, its trial marked
interrupted, exit 130), and gets that one signal only, not a second that would mean "stop at once".
A child still running after a grace period is killed with its process group (whatever it started in
turn).  On Linux a child also gets SIGTERM when adaptctl dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
GRACE_S = 120  # a child saving a checkpoint before it stops


def start(command: list[str], **kwargs) -> subprocess.Popen:
    """subprocess.Popen in a session of its own, ended by SIGTERM when adaptctl dies."""
    # preexec_fn runs in the forked child: only the prctl call, its library loaded here beforehand
    return subprocess.Popen(command, start_new_session=True, preexec_fn=_term_with_parent(), **kwargs)  # noqa: PLW1509


def stop(children: list[subprocess.Popen], grace_s: float | None = None):
    """One SIGTERM to each child still running, then wait for them; after `grace_s` (default GRACE_S),
    SIGKILL to what is left of each child's process group."""
    grace_s = GRACE_S if grace_s is None else grace_s
    for child in children:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)  # the child (a session leader) and what it started
            child.wait()


@contextlib.contextmanager
def stopped_on_exit(children: list[subprocess.Popen]):
    """Around the work adaptctl does while `children` run: any way out but the normal one (Ctrl-C,
    SIGTERM, an error) stops them before it goes on."""
    try:
        yield children
    except BaseException:
        stop(children)
        raise


def run(command: list[str], **kwargs) -> int:
    """Run `command` to its end and return its exit code; stopped with adaptctl (see stop)."""
    child = start(command, **kwargs)
    with stopped_on_exit([child]):
        return child.wait()


def _term_with_parent():
    """A function for the child to ask Linux for SIGTERM when its parent dies, or None (another system or
    libc: the Ctrl-C/SIGTERM path still stops the child)."""
    if sys.platform != "linux":
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
