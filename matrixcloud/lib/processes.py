"""Whether a process of this machine is gone: the one check the job runner and the
sandbox host's clean-up of dead hosts' leftovers (cgroups, scratch disks) share."""

from __future__ import annotations

import os
from pathlib import Path


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
