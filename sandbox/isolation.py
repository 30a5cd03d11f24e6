"""Isolation for sandboxed MCP servers: how one is started and stopped.

Two tiers, detected once per process (:func:`isolation_tier`):

``bubblewrap``
    The server runs under ``bwrap`` in new user, pid, ipc, uts, cgroup and (unless
    the sandbox allows network) network namespaces, with ``--die-with-parent`` and no
    capabilities. It sees a read-only system (``/usr``, a minimal ``/etc``), the
    Python and Node installations this host uses, the prefetch cache, a private
    ``/tmp`` and ``/proc``, and its own scratch dir read-write as cwd and HOME —
    nothing else: not the data dir, the database, the keys or other sessions.
``none``
    No namespaces: the same clean environment, scratch cwd, rlimits and own process
    group, nothing more. Production modes refuse it unless
    ``MATRIX_RUNTIME_ALLOW_UNISOLATED`` is set.

rlimits (address space, processes, open files, file size, CPU, no core files) are
set by ``prlimit`` as the last step before the server runs, inside the sandbox; on a
root host the sandbox first drops to an unprivileged uid (sandbox/bubblewrap.py).
Where the host can make cgroups, the whole tree is also in a cgroup of its own with
aggregate memory (``/tmp`` included), process and CPU limits (sandbox/cgroups.py),
joined before the server runs; :func:`terminate_tree` removes it.

The environment is built from scratch (``PATH``, ``HOME``, ``LANG``, ``TMPDIR`` and
the sandbox's own entries) and handed to ``bwrap`` as its environment, never as
arguments, so resolved secrets do not show in the host's process list.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from matrixcloud.errors import ApplicationError
from matrixcloud.lib.processes import signal_group
from sandbox import cgroups, quota
from sandbox.bubblewrap import (
    SANDBOX_UID,
    UsernsHandshake,
    bwrap_argv,
    bwrap_path,
    host_is_root,
    require_program,
    setpriv_argv,
    toolchain_path,
)
from sandbox.cgroups import SandboxCgroup, cgroup_support
from sandbox.egress import PROXY_PORT
from sandbox.egress.paths import BRIDGE_IN_SANDBOX, SOCKET_IN_SANDBOX
from sandbox.errors import IsolationUnavailable, SandboxStartError
from sandbox.quota import quota_support
from sandbox.spec import MB, SandboxLimits, SandboxSpec

logger = logging.getLogger(__name__)

TIER_BUBBLEWRAP = "bubblewrap"
TIER_NONE = "none"
STREAM_LIMIT = 16 * 1024 * 1024
TRIAL_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
# Variables that change what a program loads, or where it is looked up: refused in
# sandbox env (see sandbox.policy.env_sanity_check for why).
RESERVED_ENV_NAMES = frozenset(
    {
        "PATH", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE",
        "NODE_OPTIONS", "NODE_PATH", "BASH_ENV", "ENV", "GCONV_PATH",
        "PERL5OPT", "PERL5LIB", "RUBYOPT",
    }
)  # fmt: skip
RESERVED_ENV_PREFIXES = ("LD_",)


def env_name_reserved(name: str) -> bool:
    """Whether ``name`` is a loader or interpreter variable sandbox env may not set."""
    return name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIXES)


# --- Which tier --------------------------------------------------------------------------


@dataclass(frozen=True)
class TierProbe:
    """The outcome of trying bubblewrap once: the tier and why."""

    tier: str
    reason: str


@functools.cache
def tier_probe() -> TierProbe:
    """Run ``true`` under the real bubblewrap command line once; cached for the process."""
    if not bwrap_path():
        return TierProbe(TIER_NONE, "bwrap is not installed (apt install bubblewrap)")
    with tempfile.TemporaryDirectory(prefix="mxc-isolation-") as scratch:
        spec = SandboxSpec(argv=["true"], scratch_dir=Path(scratch))
        try:
            returncode, stderr = _trial_run(spec)
        except (OSError, ValueError, subprocess.SubprocessError, ApplicationError) as exc:
            return TierProbe(TIER_NONE, f"bwrap could not start: {exc}")
    if returncode != 0:
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {returncode}"
        return TierProbe(
            TIER_NONE,
            f"bwrap cannot create namespaces here ({detail}); user namespaces may be "
            "disabled (sysctl, AppArmor on Ubuntu 24.04, or a container's seccomp profile)",
        )
    return TierProbe(TIER_BUBBLEWRAP, "bwrap runs with user, pid, ipc, uts and network namespaces")


def _trial_run(spec: SandboxSpec) -> tuple[int, str]:
    """Start ``spec`` under bwrap synchronously (the same argv as :func:`spawn`)."""
    scratch_prepare(spec.scratch_dir, tier=TIER_BUBBLEWRAP)
    handshake = UsernsHandshake() if host_is_root() else None
    argv, env = build_argv(spec, tier=TIER_BUBBLEWRAP, handshake=handshake)
    with contextlib.ExitStack() as stack:
        if handshake:
            stack.callback(handshake.close)
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=spec.scratch_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=handshake.child_fds if handshake else (),
        )
        if handshake:
            handshake.close_child_ends()
            try:
                handshake.complete()
            except (OSError, ValueError, KeyError):
                handshake.close()  # bwrap reads EOF and fails instead of waiting
        try:
            _, stderr = proc.communicate(timeout=TRIAL_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        return proc.returncode, stderr


def isolation_tier() -> str:
    """``"bubblewrap"`` when bwrap works here, else ``"none"``."""
    return tier_probe().tier


def unisolated_allowed() -> bool:
    """Whether sandboxes may run without isolation: local-dev, or explicitly allowed."""
    return not settings.MATRIX_PRODUCTION or settings.MATRIX_ALLOW_UNISOLATED


def isolation_ready() -> bool:
    """Whether this installation can start sandboxes under its own rules."""
    return isolation_tier() == TIER_BUBBLEWRAP or unisolated_allowed()


def isolation_report() -> dict[str, Any]:
    """The tier, why, and what sandboxes run as and under (for operators and ``/v1/ready``)."""
    probe = tier_probe()
    root = host_is_root()
    limits = SandboxLimits.from_settings()
    return {
        **limits_report(),
        "tier": probe.tier,
        "reason": probe.reason,
        "bwrap": bwrap_path(),
        "sandbox_uid": SANDBOX_UID if root and probe.tier == TIER_BUBBLEWRAP else os.geteuid(),
        "network": "off unless a sandbox allows it" if probe.tier == TIER_BUBBLEWRAP else "host",
        "process_limit_enforced": not root or probe.tier == TIER_BUBBLEWRAP,
        "unisolated_allowed": unisolated_allowed(),
        "limits": {
            "memory_mb": limits.memory_bytes // MB,
            "max_processes": limits.max_processes,
            "open_files": limits.open_files,
            "file_size_mb": limits.file_size_bytes // MB,
            "cpu_seconds": limits.cpu_seconds,
        },
    }


def limits_report() -> dict[str, Any]:
    """Which tier enforces each sandbox's aggregate limits and its disk quota, and why."""
    cgroups = cgroup_support() if tier_probe().tier == TIER_BUBBLEWRAP else None
    quota = quota_support()
    return {
        "limits_tier": cgroups.tier if cgroups else "rlimits",
        "limits_reason": cgroups.reason if cgroups else "sandboxes are not under bubblewrap",
        "disk_quota": quota.tier,
        "disk_quota_reason": quota.reason,
        "disk_quota_mb": settings.MATRIX_SANDBOX_DISK_MB if quota.tier != "none" else None,
        "cpus": settings.MATRIX_SANDBOX_CPUS or None,
    }


def limits_leftovers_remove() -> None:
    """Remove the cgroups and scratch disks of this installation's dead hosts."""
    if tier_probe().tier == TIER_BUBBLEWRAP and cgroup_support().tier != cgroups.TIER_RLIMITS:
        found = cgroups.leftovers_remove()
        if found:
            logger.warning("removed %d sandbox cgroups a dead host left", found)
    found = quota.leftovers_remove(settings.MATRIX_DATA_DIR.resolve() / "mcp")
    if found:
        logger.warning("removed %d sandbox disks a dead host left", found)


# --- The command line -------------------------------------------------------------------


def build_argv(
    spec: SandboxSpec, *, tier: str | None = None, handshake: UsernsHandshake | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command line and the environment that start ``spec`` in ``tier``.

    Raises :class:`IsolationUnavailable` for tier ``none`` where that is refused, and
    ``ValueError`` for a spec that would expose the data dir or set a reserved
    variable. A root host must pass a :class:`UsernsHandshake` for the bubblewrap tier
    (:func:`spawn` does).
    """
    tier = tier or isolation_tier()
    if tier != TIER_BUBBLEWRAP and not unisolated_allowed():
        raise IsolationUnavailable(
            f"sandboxes cannot be isolated on this machine ({tier_probe().reason}); "
            f"{settings.MATRIX_MODE} mode refuses to run them without isolation. Install "
            "bubblewrap and allow user namespaces, or set MATRIX_RUNTIME_ALLOW_UNISOLATED=1"
        )
    env = sandbox_env(spec, tier=tier)
    program = [*spec.argv]
    if spec.egress_socket is not None and tier == TIER_BUBBLEWRAP:
        program = [*egress_bridge_argv(), "--", *program]
    launcher = [*rlimit_argv(spec.limits), "--", *program]
    if tier != TIER_BUBBLEWRAP:
        return launcher, env
    if host_is_root():
        if handshake is None:
            raise ValueError("a root host starts bubblewrap with a UsernsHandshake")
        launcher = [*setpriv_argv(), *launcher]
    return [*bwrap_argv(spec, handshake), "--", *launcher], env


def sandbox_env(spec: SandboxSpec, *, tier: str) -> dict[str, str]:
    """A clean environment: PATH, HOME, LANG, TMPDIR, then the spec's own entries."""
    reserved = sorted(name for name in spec.env if env_name_reserved(name))
    if reserved:
        raise ValueError(f"sandbox env may not set {', '.join(reserved)}")
    scratch = str(spec.scratch_dir.resolve())
    env = {
        "PATH": ":".join(toolchain_path()),
        "HOME": scratch,
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp" if tier == TIER_BUBBLEWRAP else scratch,  # noqa: S108 (private tmpfs)
    }
    if spec.egress_socket is not None and tier == TIER_BUBBLEWRAP:
        proxy = f"http://127.0.0.1:{PROXY_PORT}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env[name] = proxy
        env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
        env["NODE_USE_ENV_PROXY"] = "1"  # Node 22.21+/24: fetch and http use the proxy
    env.update(spec.env)
    return env


def egress_bridge_argv() -> list[str]:
    """The relay a sandbox with an egress proxy runs first (sandbox/egress/bridge.py):
    the base interpreter (bound in every sandbox), isolated mode, no site."""
    python = getattr(sys, "_base_executable", sys.executable)
    bridge, socket = str(BRIDGE_IN_SANDBOX), str(SOCKET_IN_SANDBOX)
    return [python, "-I", "-S", bridge, socket, str(PROXY_PORT)]


def rlimit_argv(limits: SandboxLimits) -> list[str]:
    """``prlimit`` setting every limit, soft and hard, for the program it runs."""
    return [
        require_program("prlimit"),
        f"--as={limits.memory_bytes}",
        f"--nproc={limits.max_processes}",
        f"--nofile={limits.open_files}",
        f"--fsize={limits.file_size_bytes}",
        f"--cpu={limits.cpu_seconds}",
        "--core=0",
    ]


# --- Processes -----------------------------------------------------------------------------


def scratch_owner(tier: str) -> int:
    """The uid a sandbox's scratch dir belongs to: :data:`SANDBOX_UID` on a root host
    under bubblewrap, else this host's own."""
    return SANDBOX_UID if tier == TIER_BUBBLEWRAP and host_is_root() else os.geteuid()


def scratch_prepare(path: Path, *, tier: str) -> None:
    """Create the scratch dir (0700); a root host gives it to :data:`SANDBOX_UID`."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    owner = scratch_owner(tier)
    if owner != os.geteuid():
        os.chown(path, owner, owner)


async def spawn(spec: SandboxSpec, *, tier: str | None = None) -> asyncio.subprocess.Process:
    """Start ``spec`` isolated, with stdin/stdout/stderr pipes, in its own session.

    The stdout reader takes lines up to 16 MiB (large MCP messages). Stop it with
    :func:`terminate_tree`.
    """
    tier = tier or isolation_tier()
    scratch_prepare(spec.scratch_dir, tier=tier)
    handshake = UsernsHandshake() if tier == TIER_BUBBLEWRAP and host_is_root() else None
    group = await _cgroup_for(handshake)
    try:
        argv, env = build_argv(spec, tier=tier, handshake=handshake)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=spec.scratch_dir,
            env=env,
            start_new_session=True,
            limit=STREAM_LIMIT,
            pass_fds=handshake.child_fds if handshake else (),
        )
    except BaseException:
        if handshake:
            handshake.close()
        if group:
            await asyncio.to_thread(group.remove)
        raise
    if group is not None and handshake is not None:
        _CGROUPS[proc.pid] = group
        handshake.on_child = functools.partial(_join, group, proc.pid)
    if handshake:
        await _handshake_finish(proc, handshake)
    return proc


# bwrap's pid -> its sandbox's cgroup, removed by terminate_tree
_CGROUPS: dict[int, SandboxCgroup] = {}


@atexit.register
def _cgroups_release() -> None:
    """At exit, remove the cgroups of sandboxes nobody stopped (a caller that only
    waited for its process): their processes are gone with bwrap's pid namespace."""
    while _CGROUPS:
        _, group = _CGROUPS.popitem()
        group.remove(wait=0.5)


async def _cgroup_for(handshake: UsernsHandshake | None) -> SandboxCgroup | None:
    """A cgroup for a sandbox whose launch waits in a handshake (root hosts), where
    this host can make one; without a handshake there is no moment to join it
    before the server runs, so such hosts keep rlimits only."""
    if handshake is None:
        return None
    try:
        return await asyncio.to_thread(SandboxCgroup.create)
    except OSError as exc:
        raise SandboxStartError(f"could not create the sandbox's cgroup: {exc}") from exc


def _join(group: SandboxCgroup, bwrap_pid: int, child_pid: int) -> None:
    """Put bwrap and its waiting namespace child in the cgroup (children follow)."""
    group.add(bwrap_pid)
    group.add(child_pid)


async def _handshake_finish(proc: asyncio.subprocess.Process, handshake: UsernsHandshake) -> None:
    """Map the uids of a root host's sandbox; on failure stop bwrap and say why."""
    handshake.close_child_ends()
    done = asyncio.ensure_future(asyncio.to_thread(handshake.complete))
    try:
        await asyncio.wait_for(asyncio.shield(done), HANDSHAKE_TIMEOUT)
    except (OSError, ValueError, KeyError, TimeoutError) as exc:
        await terminate_tree(proc, grace=0)
        with contextlib.suppress(Exception):
            await done  # bwrap is gone, so the thread's read has ended
        stderr = (await proc.stderr.read()).decode(errors="replace") if proc.stderr else ""
        raise SandboxStartError(f"bubblewrap failed to start: {stderr.strip() or exc}") from exc
    finally:
        handshake.close()


async def terminate_tree(proc: asyncio.subprocess.Process, grace: float = 2.0) -> int:
    """TERM the process group, wait ``grace`` seconds, KILL the group, reap; the exit code.

    Under bubblewrap the group's leader is bwrap: when it dies its pid namespace goes
    with it (``--die-with-parent``), so no sandboxed process survives, whatever
    session or group it moved to. Without isolation a process that left the group
    (``setsid``) escapes this.
    """
    signal_group(proc.pid, signal.SIGTERM)
    if proc.returncode is None and grace > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)
    signal_group(proc.pid, signal.SIGKILL)
    code = await proc.wait()
    group = _CGROUPS.pop(proc.pid, None)
    if group is not None:
        await asyncio.to_thread(group.remove)
    return code
