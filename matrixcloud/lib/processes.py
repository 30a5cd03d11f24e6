"""Processes of this machine: whether one is gone, and how a process group is signalled,
killed and tied to its parent's life.

The job runner, the sandbox host's clean-up of dead hosts' leftovers (cgroups, scratch
disks), the supervisor behind ``serve``, job handlers' subprocesses, sandboxes and
installers share these: one process-group kill for the whole project.
Standard library only: the ``serve`` supervisor imports it (no Django there).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any


def process_gone(pid: int) -> bool:
    """True when ``pid`` has exited (or is a zombie nobody reaped); a process of another
    user counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(pid)


def _zombie(pid: int) -> bool:
    """A dead process nobody has reaped yet (``/proc`` only; elsewhere: False)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def earlier_process_gone(pid: int) -> bool:
    """Whether the process that named a leftover with ``pid`` is gone: our own pid
    means an earlier process that had it (this one made nothing yet at start)."""
    return pid == os.getpid() or process_gone(pid)


# --- process groups -------------------------------------------------------------------
# A child started with ``start_new_session=True`` leads a process group of its own: a
# signal to the group reaches it and everything it forked, and a signal to our own group
# (a terminal's Ctrl-C, a supervisor's group kill) does not. ``die_with_parent`` closes
# the other gap: such a child is out of reach of a kill of our group, so it asks the
# kernel for a signal when we die, even by SIGKILL.

KILL_GRACE_SECONDS = 2.0
PR_SET_PDEATHSIG = 1


def _libc_with_prctl() -> ctypes.CDLL | None:
    # prctl is Linux's; elsewhere a child may outlive a killed parent
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc_with_prctl()


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to the process group ``pgid``; a group that is gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_process_group(proc: subprocess.Popen[Any], grace: float = KILL_GRACE_SECONDS) -> None:
    """TERM the group ``proc`` leads, wait ``grace``, then KILL it and reap ``proc``;
    leaves no survivors in the group."""
    if proc.poll() is not None:
        signal_group(proc.pid, signal.SIGKILL)  # children may outlive the leader
        return
    signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when the process
    that calls this (its parent) dies, however it dies. None where the kernel cannot
    (not Linux); pass it as it is.

    Call it in the parent, just before starting the child: a parent that dies before the
    child asks is noticed (the child's parent is then another process), and the child
    sends ``sig`` to itself at once."""
    if _LIBC is None:
        return None
    parent = os.getpid()
    libc = _LIBC

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os.kill(os.getpid(), sig)

    return arm
