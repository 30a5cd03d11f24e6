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
set by ``prlimit`` as the last step before the server runs, inside the sandbox.
``RLIMIT_NPROC`` is never enforced for uid 0, so when this host runs as root the
bubblewrap tier maps a second uid (:data:`SANDBOX_UID`) into the sandbox's user
namespace (bwrap's ``--userns-block-fd`` lets this process write the maps) and
``setpriv`` drops to it before ``prlimit``; the process count is then per sandbox,
because each has its own user namespace.

The environment is built from scratch (``PATH``, ``HOME``, ``LANG``, ``TMPDIR`` and
the sandbox's own entries) and handed to ``bwrap`` as its environment, never as
arguments, so resolved secrets do not show in the host's process list.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from matrixcloud.errors import ApplicationError, ServiceUnavailable

TIER_BUBBLEWRAP = "bubblewrap"
TIER_NONE = "none"
# The uid sandboxes run as when this host is root ("nobody" on Debian and Red Hat).
SANDBOX_UID = 65534
STREAM_LIMIT = 16 * 1024 * 1024
TRIAL_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
MB = 1024 * 1024
# What the launch chain holds, in the namespace only, until setpriv drops to SANDBOX_UID
# (clearing all of them): changing uid and groups, and entering the scratch dir for
# --chdir (it is 0700 and belongs to SANDBOX_UID).
HANDSHAKE_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_DAC_READ_SEARCH")

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
MERGED_USR_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc programs need: name lookups, TLS roots, the dynamic loader, time zone.
ETC_ENTRIES = (
    "alternatives", "ca-certificates", "ca-certificates.conf", "crypto-policies", "pki",
    "ssl", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone",
    "nsswitch.conf", "passwd", "group", "hosts", "host.conf", "resolv.conf", "gai.conf",
    "protocols", "services", "mime.types", "os-release",
)  # fmt: skip
SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")


class IsolationUnavailable(ServiceUnavailable):
    """Sandboxes cannot be isolated here and this mode refuses to run them without it."""


class SandboxStartError(ApplicationError):
    """The sandbox could not be set up (bubblewrap failed before the server started)."""


def env_name_reserved(name: str) -> bool:
    """Whether ``name`` is a loader or interpreter variable sandbox env may not set."""
    return name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIXES)


@dataclass(frozen=True)
class SandboxLimits:
    """The rlimits a sandboxed process tree runs under (each process, except processes)."""

    memory_bytes: int
    max_processes: int
    open_files: int
    file_size_bytes: int
    cpu_seconds: int

    @classmethod
    def from_settings(cls) -> SandboxLimits:
        """The configured defaults (``MATRIX_RUNTIME_SANDBOX_*``)."""
        return cls(
            memory_bytes=settings.MATRIX_SANDBOX_MEMORY_MB * MB,
            max_processes=settings.MATRIX_SANDBOX_MAX_PROCESSES,
            open_files=settings.MATRIX_SANDBOX_OPEN_FILES,
            file_size_bytes=settings.MATRIX_SANDBOX_FILE_SIZE_MB * MB,
            cpu_seconds=settings.MATRIX_SANDBOX_CPU_SECONDS,
        )


@dataclass(frozen=True)
class SandboxSpec:
    """What to run and how: the validated argv, its scratch dir, env, network, limits.

    ``env`` is added to the clean environment (secrets already resolved);
    ``ro_binds`` are extra paths shown read-only at the same place, on top of the
    system, the toolchains and the prefetch cache.
    """

    argv: Sequence[str]
    scratch_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    allow_network: bool = False
    limits: SandboxLimits = field(default_factory=SandboxLimits.from_settings)
    ro_binds: Sequence[Path] = ()


# --- Which tier --------------------------------------------------------------------------


@dataclass(frozen=True)
class TierProbe:
    """The outcome of trying bubblewrap once: the tier and why."""

    tier: str
    reason: str


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@functools.cache
def bwrap_help() -> str:
    """``bwrap --help`` (options vary by version: 0.6 lacks ``--disable-userns``)."""
    path = bwrap_path()
    if not path:
        return ""
    result = subprocess.run(
        [path, "--help"], capture_output=True, text=True, timeout=TRIAL_TIMEOUT, check=False
    )
    return result.stdout + result.stderr


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


def host_is_root() -> bool:
    return os.geteuid() == 0


def isolation_report() -> dict[str, Any]:
    """The tier, why, and what sandboxes run as and under (for operators and ``/v1/ready``)."""
    probe = tier_probe()
    root = host_is_root()
    limits = SandboxLimits.from_settings()
    return {
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


# --- The command line -------------------------------------------------------------------


class UsernsHandshake:
    """Pipes for bwrap's ``--info-fd`` and ``--userns-block-fd`` (root hosts only).

    bwrap creates the user namespace, reports its child's pid on the info pipe and
    waits on the block pipe; :meth:`complete` then maps uid/gid 0 (bwrap's own set-up
    needs it) and :data:`SANDBOX_UID`, which ``setpriv`` switches to inside.
    """

    def __init__(self) -> None:
        self.info_read, self.info_write = os.pipe()
        self.block_read, self.block_write = os.pipe()
        self._closed: set[int] = set()

    @property
    def child_fds(self) -> tuple[int, int]:
        return (self.info_write, self.block_read)

    def _close(self, *fds: int) -> None:
        for fd in fds:
            if fd not in self._closed:
                self._closed.add(fd)
                os.close(fd)

    def close_child_ends(self) -> None:
        self._close(*self.child_fds)

    def close(self) -> None:
        self._close(self.info_read, self.info_write, self.block_read, self.block_write)

    def complete(self) -> None:
        """Read bwrap's child pid, write its maps, let it go on (blocking, ~1 ms)."""
        chunks = []
        while chunk := os.read(self.info_read, 4096):
            chunks.append(chunk)
            with contextlib.suppress(ValueError):
                info = json.loads(b"".join(chunks))
                break
        else:
            raise ValueError("bwrap exited before creating the user namespace")
        mapping = f"0 0 1\n{SANDBOX_UID} {SANDBOX_UID} 1\n"
        pid = int(info["child-pid"])
        Path(f"/proc/{pid}/uid_map").write_text(mapping)
        Path(f"/proc/{pid}/gid_map").write_text(mapping)
        os.write(self.block_write, b"1")


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
    launcher = [*rlimit_argv(spec.limits), "--", *spec.argv]
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
    env.update(spec.env)
    return env


def rlimit_argv(limits: SandboxLimits) -> list[str]:
    """``prlimit`` setting every limit, soft and hard, for the program it runs."""
    return [
        _require("prlimit"),
        f"--as={limits.memory_bytes}",
        f"--nproc={limits.max_processes}",
        f"--nofile={limits.open_files}",
        f"--fsize={limits.file_size_bytes}",
        f"--cpu={limits.cpu_seconds}",
        "--core=0",
    ]


def setpriv_argv() -> list[str]:
    """Drop from the namespace's root to :data:`SANDBOX_UID`, losing every capability."""
    uid = str(SANDBOX_UID)
    return [
        _require("setpriv"),
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
    ]


def _require(program: str) -> str:
    path = shutil.which(program, path=":".join((*SYSTEM_PATH, "/usr/sbin", "/sbin")))
    if not path:
        raise SandboxStartError(f"{program} (util-linux) is required to start sandboxes")
    return str(Path(path).resolve())


def bwrap_argv(spec: SandboxSpec, handshake: UsernsHandshake | None) -> list[str]:
    """bwrap's options: namespaces, no capabilities, the file system view."""
    return [
        bwrap_path() or "bwrap",
        *namespace_args(spec, handshake),
        *system_binds(),
        *["--proc", "/proc", "--dev", "/dev"],
        *private_tmp(spec.limits),
        *visible_binds(spec),
    ]


def private_tmp(limits: SandboxLimits) -> list[str]:
    """A tmpfs ``/tmp`` any sandbox uid can write, no larger than one file may be."""
    args = []
    if "--perms" in bwrap_help():
        args += ["--perms", "1777"]
    if "--size" in bwrap_help():
        args += ["--size", str(limits.file_size_bytes)]
    return [*args, "--tmpfs", "/tmp"]  # noqa: S108


def namespace_args(spec: SandboxSpec, handshake: UsernsHandshake | None) -> list[str]:
    args = ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--hostname", "sandbox", "--die-with-parent"]
    args += ["--new-session", "--cap-drop", "ALL"]
    if not spec.allow_network:
        args.append("--unshare-net")
    if handshake is not None:
        args += ["--info-fd", str(handshake.info_write)]
        args += ["--userns-block-fd", str(handshake.block_read)]
        args += [arg for cap in HANDSHAKE_CAPS for arg in ("--cap-add", cap)]
    elif "--disable-userns" in bwrap_help():
        args.append("--disable-userns")
    return args


def system_binds() -> list[str]:
    """Read-only ``/usr`` (and its merged-usr links), and the parts of ``/etc`` needed."""
    args = ["--ro-bind", "/usr", "/usr"]
    for path in MERGED_USR_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += parent_dirs(Path("/etc/passwd"))
    for name in ETC_ENTRIES:
        if os.path.exists(f"/etc/{name}"):
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    return args


def visible_binds(spec: SandboxSpec) -> list[str]:
    """Toolchains, the prefetch cache and extra paths read-only; the scratch read-write."""
    scratch = spec.scratch_dir.resolve()
    bind_check(Path("/usr"), scratch=scratch)  # system_binds shows all of it
    readonly = toolchain_dirs()
    if prefetch_cache_dir().is_dir():
        readonly.append(prefetch_cache_dir())
    readonly += [Path(path).resolve() for path in spec.ro_binds]
    args: list[str] = []
    for path in readonly:
        bind_check(path, scratch=scratch)
        args += [*parent_dirs(path), "--ro-bind", str(path), str(path)]
    bind_check(scratch, scratch=scratch)
    args += [*parent_dirs(scratch), "--bind", str(scratch), str(scratch)]
    return [*args, "--chdir", str(scratch)]


def parent_dirs(path: Path) -> list[str]:
    """Create the parents of a mount point traversable (bwrap makes them 0700, which
    locks out a sandbox uid other than their owner)."""
    if "--perms" not in bwrap_help():
        return []
    skip = ("/", "/tmp")  # noqa: S108 (the sandbox's own tmpfs, already 1777)
    parents = [parent for parent in reversed(path.parents) if str(parent) not in skip]
    return [arg for parent in parents for arg in ("--perms", "0755", "--dir", str(parent))]


def bind_check(path: Path, *, scratch: Path) -> None:
    """Refuse a bind that would show the data dir, or anything in it but the scratch
    dir and the prefetch cache (the database, keys and other sessions live there)."""
    data = settings.MATRIX_DATA_DIR.resolve()
    if path == data or data.is_relative_to(path):
        raise ValueError(f"{path} would expose the data dir to a sandbox")
    inside = path.is_relative_to(data)
    if inside and path != scratch and not path.is_relative_to(prefetch_cache_dir()):
        raise ValueError(f"{path} is in the data dir; only the scratch dir and cache may be")


def prefetch_cache_dir() -> Path:
    """``<data>/sandbox-cache``: packages ``sandbox_prefetch`` installed (read-only)."""
    return settings.MATRIX_DATA_DIR.resolve() / "sandbox-cache"


def toolchain_dirs() -> list[Path]:
    """The Python (base and venv) and Node installations outside ``/usr``, to bind."""
    candidates = [Path(sys.base_prefix), Path(sys.prefix)]
    node = shutil.which("node")
    if node:
        candidates.append(Path(node).resolve().parent.parent)
    dirs: list[Path] = []
    for path in (candidate.resolve() for candidate in candidates):
        covered = path.is_relative_to("/usr") or any(path.is_relative_to(d) for d in dirs)
        if not covered and path.is_dir():
            dirs.append(path)
    return dirs


def toolchain_path() -> list[str]:
    """PATH inside a sandbox: the venv first (its python has this host's packages)."""
    bins = [str(Path(sys.prefix) / "bin"), str(Path(sys.base_prefix) / "bin")]
    node = shutil.which("node")
    if node and str(Path(node).resolve().parent) not in SYSTEM_PATH:
        bins.append(str(Path(node).resolve().parent))
    return list(dict.fromkeys([*bins, *SYSTEM_PATH]))


# --- Processes -----------------------------------------------------------------------------


def scratch_prepare(path: Path, *, tier: str) -> None:
    """Create the scratch dir (0700); a root host gives it to :data:`SANDBOX_UID`."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    if tier == TIER_BUBBLEWRAP and host_is_root():
        os.chown(path, SANDBOX_UID, SANDBOX_UID)


async def spawn(spec: SandboxSpec, *, tier: str | None = None) -> asyncio.subprocess.Process:
    """Start ``spec`` isolated, with stdin/stdout/stderr pipes, in its own session.

    The stdout reader takes lines up to 16 MiB (large MCP messages). Stop it with
    :func:`terminate_tree`.
    """
    tier = tier or isolation_tier()
    scratch_prepare(spec.scratch_dir, tier=tier)
    handshake = UsernsHandshake() if tier == TIER_BUBBLEWRAP and host_is_root() else None
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
        raise
    if handshake:
        await _handshake_finish(proc, handshake)
    return proc


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


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def terminate_tree(proc: asyncio.subprocess.Process, grace: float = 2.0) -> int:
    """TERM the process group, wait ``grace`` seconds, KILL the group, reap; the exit code.

    Under bubblewrap the group's leader is bwrap: when it dies its pid namespace goes
    with it (``--die-with-parent``), so no sandboxed process survives, whatever
    session or group it moved to. Without isolation a process that left the group
    (``setsid``) escapes this.
    """
    _signal_group(proc.pid, signal.SIGTERM)
    if proc.returncode is None and grace > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)
    _signal_group(proc.pid, signal.SIGKILL)
    return await proc.wait()
