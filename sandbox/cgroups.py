"""Aggregate limits of one sandbox: a cgroup per sandbox, v2 or v1.

rlimits bound each process alone (three processes of 1.4 GiB each pass a 2 GiB
address-space limit), so where the host can make cgroups every sandbox gets its own:
memory (its RAM-backed ``/tmp`` included, since tmpfs pages are charged to the cgroup
that wrote them; swap too, where accounted), processes and threads, and a CPU quota.

Which tier (:func:`cgroup_support`, probed once per process):

``cgroup-v2``
    A cgroup2 hierarchy with the ``memory``, ``pids`` and ``cpu`` controllers
    delegated to this process's own cgroup (``cgroup.subtree_control``).
``cgroup-v1``
    The v1 ``memory``, ``pids`` and ``cpu`` hierarchies (mounted under
    ``/sys/fs/cgroup/<controller>`` on these machines, whose cgroup2 mount is empty).
``rlimits``
    Neither can be made here (not root, or no controllers): each process keeps its
    rlimits only, and ``/v1/ready`` warns.

A sandbox's cgroups are children of this process's own cgroup in each hierarchy, named
``mxc-<installation>.<host pid>.<n>``, so two installations on one machine never share
one and a restarted host removes what a dead host left (:func:`leftovers_remove`).
The bubblewrap launch places bwrap and its namespace child in the cgroup while the
child waits on ``--userns-block-fd`` (sandbox/bubblewrap.py), so nothing of the
server runs before it is limited.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from matrixcloud.lib.processes import earlier_process_gone

logger = logging.getLogger(__name__)

TIER_V2 = "cgroup-v2"
TIER_V1 = "cgroup-v1"
TIER_RLIMITS = "rlimits"
CONTROLLERS = ("memory", "pids", "cpu")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
EMPTY_WAIT = 2.0  # seconds a removal waits for the killed tree to leave the cgroup
_serial = itertools.count(1)


@dataclass(frozen=True)
class CgroupSupport:
    """What this host can make: the tier, why, and where sandbox cgroups go
    (one parent dir per v1 controller, or the one v2 dir)."""

    tier: str
    reason: str
    parents: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class CgroupLimits:
    """The aggregate limits of one sandbox's cgroup."""

    memory_bytes: int
    max_processes: int
    cpus: float  # 0: no CPU quota

    @classmethod
    def from_settings(cls) -> CgroupLimits:
        return cls(
            memory_bytes=settings.MATRIX_SANDBOX_MEMORY_MB * 1024 * 1024,
            max_processes=settings.MATRIX_SANDBOX_MAX_PROCESSES,
            cpus=settings.MATRIX_SANDBOX_CPUS,
        )


def installation_key() -> str:
    """Eight hex digits of the data dir: which installation a cgroup belongs to."""
    data = str(Path(settings.MATRIX_DATA_DIR).resolve()).encode()
    return hashlib.sha256(data).hexdigest()[:8]


def _own_paths() -> dict[str, str]:
    """This process's cgroup path in each hierarchy (``/proc/self/cgroup``); the v2
    one under the key ``""``."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _v1_mounts() -> dict[str, Path]:
    """Where each v1 controller is mounted (``/proc/self/mounts``)."""
    mounts: dict[str, Path] = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "cgroup":
            for option in parts[3].split(","):
                if option in CONTROLLERS:
                    mounts[option] = Path(parts[1])
    return mounts


def _v2_mount() -> Path | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "cgroup2":
            return Path(parts[1])
    return None


def _probe(parents: dict[str, Path]) -> None:
    """Make and remove one child in every parent (raises OSError where that fails)."""
    name = f"mxc-probe.{os.getpid()}"
    made = []
    try:
        for parent in parents.values():
            (parent / name).mkdir()
            made.append(parent / name)
    finally:
        for path in made:
            with contextlib.suppress(OSError):
                path.rmdir()


def _v2_support(own: dict[str, str]) -> CgroupSupport | None:
    mount = _v2_mount()
    if mount is None or "" not in own:
        return None
    base = mount / own[""].lstrip("/")
    available = set((mount / "cgroup.controllers").read_text().split()) if mount else set()
    if not set(CONTROLLERS) <= available:
        return None
    control = base / "cgroup.subtree_control"
    try:
        enabled = set(control.read_text().split())
        missing = [name for name in CONTROLLERS if name not in enabled]
        if missing:
            control.write_text(" ".join(f"+{name}" for name in missing))
        _probe({"": base})
    except OSError as exc:
        return CgroupSupport(TIER_RLIMITS, f"cgroup v2 at {base} is not delegated to us: {exc}")
    return CgroupSupport(TIER_V2, "a cgroup v2 per sandbox (memory, pids, cpu)", {"": base})


def _v1_support(own: dict[str, str]) -> CgroupSupport | None:
    mounts = _v1_mounts()
    if not set(CONTROLLERS) <= set(mounts):
        return None
    parents = {name: mounts[name] / own.get(name, "/").lstrip("/") for name in CONTROLLERS}
    try:
        _probe(parents)
    except OSError as exc:
        return CgroupSupport(TIER_RLIMITS, f"cannot create v1 cgroups here: {exc}")
    return CgroupSupport(TIER_V1, "v1 memory, pids and cpu cgroups, one per sandbox", parents)


@functools.cache
def cgroup_support() -> CgroupSupport:
    """The tier this host enforces (probed once; a fallback is logged once)."""
    support = _detect()
    if support.tier == TIER_RLIMITS:
        logger.warning("sandboxes get per-process rlimits only: %s", support.reason)
    return support


def _detect() -> CgroupSupport:
    if os.geteuid() != 0:
        return CgroupSupport(
            TIER_RLIMITS, "the sandbox host is not root, so it cannot place sandboxes in cgroups"
        )
    try:
        own = _own_paths()
        for support in (_v2_support(own), _v1_support(own)):
            if support is not None and support.tier != TIER_RLIMITS:
                return support
    except (OSError, ValueError) as exc:
        return CgroupSupport(TIER_RLIMITS, f"cgroups could not be read: {exc}")
    return CgroupSupport(
        TIER_RLIMITS, "no cgroup hierarchy with the memory, pids and cpu controllers is writable"
    )


class SandboxCgroup:
    """One sandbox's cgroup(s): made with limits, joined by its processes, removed."""

    def __init__(self, support: CgroupSupport, limits: CgroupLimits) -> None:
        self.tier = support.tier
        self.name = f"mxc-{installation_key()}.{os.getpid()}.{next(_serial)}"
        self.dirs = {key: parent / self.name for key, parent in support.parents.items()}
        self.limits = limits

    @classmethod
    def create(cls, limits: CgroupLimits | None = None) -> SandboxCgroup | None:
        """A new cgroup with ``limits``, or None where this host enforces rlimits only."""
        support = cgroup_support()
        if support.tier == TIER_RLIMITS:
            return None
        group = cls(support, limits or CgroupLimits.from_settings())
        try:
            for path in group.dirs.values():
                path.mkdir()
            group._write_limits()
        except OSError:
            group.remove()
            raise
        return group

    def _write_limits(self) -> None:
        limits = self.limits
        if self.tier == TIER_V2:
            base = self.dirs[""]
            _write(base / "memory.max", limits.memory_bytes)
            _write_optional(base / "memory.swap.max", 0)
            _write(base / "pids.max", limits.max_processes)
            if limits.cpus > 0:
                _write(base / "cpu.max", f"{int(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
            return
        _write(self.dirs["memory"] / "memory.limit_in_bytes", limits.memory_bytes)
        # memory + swap; absent where the kernel does not account swap
        _write_optional(self.dirs["memory"] / "memory.memsw.limit_in_bytes", limits.memory_bytes)
        _write(self.dirs["pids"] / "pids.max", limits.max_processes)
        if limits.cpus > 0:
            _write(self.dirs["cpu"] / "cpu.cfs_period_us", CPU_PERIOD_US)
            _write(self.dirs["cpu"] / "cpu.cfs_quota_us", int(limits.cpus * CPU_PERIOD_US))

    def add(self, pid: int) -> None:
        """Move ``pid`` (and, in v1, its thread group) into every hierarchy."""
        for path in self.dirs.values():
            _write(path / "cgroup.procs", pid)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.dirs.values():
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return found

    def remove(self, *, wait: float = EMPTY_WAIT) -> None:
        """Kill what is left inside, wait (bounded) for it to go, remove the dirs."""
        deadline = time.monotonic() + wait
        while (left := self.pids()) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        for path in self.dirs.values():
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                logger.warning("could not remove sandbox cgroup %s: %s", path, exc)

    def memory_peak(self) -> int | None:
        """The most memory the sandbox used (bytes), where the kernel says."""
        name = "memory.peak" if self.tier == TIER_V2 else "memory.max_usage_in_bytes"
        key = "" if self.tier == TIER_V2 else "memory"
        try:
            return int((self.dirs[key] / name).read_text())
        except (OSError, ValueError, KeyError):
            return None


def leftovers_remove() -> int:
    """Remove this installation's sandbox cgroups whose host process is gone (a crashed
    host); the number of dirs removed (one per hierarchy). Live hosts' cgroups are left alone."""
    support = cgroup_support()
    prefix = f"mxc-{installation_key()}."
    removed = 0
    for key, parent in support.parents.items():
        for path in parent.glob(f"{prefix}*"):
            host_pid = path.name.removeprefix(prefix).split(".")[0]
            if not host_pid.isdigit() or not earlier_process_gone(int(host_pid)):
                continue
            group = SandboxCgroup(CgroupSupport(support.tier, "", {key: parent}), _NO_LIMITS)
            group.dirs = {key: path}
            group.remove()
            removed += 1
    return removed


_NO_LIMITS = CgroupLimits(memory_bytes=0, max_processes=0, cpus=0)


def _write(path: Path, value: object) -> None:
    path.write_text(f"{value}\n")


def _write_optional(path: Path, value: object) -> None:
    if path.exists():
        _write(path, value)
