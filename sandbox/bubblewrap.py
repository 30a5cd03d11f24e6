"""The bubblewrap command line of a sandbox: namespaces, capabilities, what it sees.

A sandbox sees a read-only ``/usr`` (with its merged-usr links) and the parts of
``/etc`` programs need, the Python and Node installations this host runs (bound
read-only where they are, so paths mean the same inside), the prefetch cache, a
private ``/proc``, ``/dev`` and ``/tmp``, and its scratch dir read-write as cwd —
nothing of the data dir besides (:func:`bind_check` refuses anything else there).

``RLIMIT_NPROC`` is never enforced for uid 0, so a root host maps a second uid
(:data:`SANDBOX_UID`) into each sandbox's user namespace — bwrap's
``--userns-block-fd`` waits while :class:`UsernsHandshake` writes the maps — and
``setpriv`` drops to it before anything else runs; the process count is then per
sandbox, since each has its own user namespace.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from sandbox.egress.paths import BRIDGE, BRIDGE_IN_SANDBOX, SOCKET_IN_SANDBOX
from sandbox.errors import SandboxStartError

if TYPE_CHECKING:
    from sandbox.spec import SandboxLimits, SandboxSpec

# The uid sandboxes run as when this host is root ("nobody" on Debian and Red Hat).
SANDBOX_UID = 65534
# What the launch chain holds, in the namespace only, until setpriv drops to SANDBOX_UID
# (clearing all of them): changing uid and groups, and entering the scratch dir for
# --chdir (it is 0700 and belongs to SANDBOX_UID).
HANDSHAKE_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_DAC_READ_SEARCH")
MERGED_USR_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc programs need: name lookups, TLS roots, the dynamic loader, time zone.
ETC_ENTRIES = (
    "alternatives", "ca-certificates", "ca-certificates.conf", "crypto-policies", "pki",
    "ssl", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone",
    "nsswitch.conf", "passwd", "group", "hosts", "host.conf", "resolv.conf", "gai.conf",
    "protocols", "services", "mime.types", "os-release",
)  # fmt: skip
SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
HELP_TIMEOUT = 10.0


def bwrap_path() -> str | None:
    """Where ``bwrap`` is on this host's PATH, if anywhere."""
    return shutil.which("bwrap")


@functools.cache
def bwrap_help() -> str:
    """``bwrap --help`` (options vary by version: 0.6 lacks ``--disable-userns``)."""
    path = bwrap_path()
    if not path:
        return ""
    result = subprocess.run(
        [path, "--help"], capture_output=True, text=True, timeout=HELP_TIMEOUT, check=False
    )
    return result.stdout + result.stderr


def host_is_root() -> bool:
    """Whether this host runs as root (its sandboxes then drop to :data:`SANDBOX_UID`)."""
    return os.geteuid() == 0


class UsernsHandshake:
    """Pipes for bwrap's ``--info-fd`` and ``--userns-block-fd`` (root hosts only).

    bwrap creates the user namespace, reports its child's pid on the info pipe and
    waits on the block pipe; :meth:`complete` then maps uid/gid 0 (bwrap's own set-up
    needs it) and :data:`SANDBOX_UID`, which ``setpriv`` switches to inside.
    """

    def __init__(self, on_child: Callable[[int], None] | None = None) -> None:
        # Called with the namespace child's pid while it still waits: the place to put
        # it in the sandbox's cgroup before anything of the sandbox runs.
        self.on_child = on_child
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
        if self.on_child is not None:
            self.on_child(pid)
        os.write(self.block_write, b"1")


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


def private_tmp(limits: SandboxLimits) -> list[str]:
    """A tmpfs ``/tmp`` any sandbox uid can write, no larger than one file may be."""
    args = []
    if "--perms" in bwrap_help():
        args += ["--perms", "1777"]
    if "--size" in bwrap_help():
        args += ["--size", str(limits.file_size_bytes)]
    return [*args, "--tmpfs", "/tmp"]  # noqa: S108


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
    if spec.egress_socket is not None:  # the one route out: the session's proxy
        args += [*parent_dirs(SOCKET_IN_SANDBOX), "--ro-bind", str(BRIDGE), str(BRIDGE_IN_SANDBOX)]
        args += ["--bind", str(spec.egress_socket), str(SOCKET_IN_SANDBOX)]
    return [*args, "--chdir", str(scratch)]


def sandbox_sees(path: Path, *, scratch: Path, ro_binds: Sequence[Path] = ()) -> bool:
    """Whether a host path is visible, at the same place, inside a sandbox that
    :func:`bwrap_argv` builds: ``/usr`` (and its merged-usr links), the ``/etc`` entries,
    the toolchains, the prefetch cache, ``ro_binds`` and the scratch dir. A host
    ``/tmp`` path is not: the sandbox has a ``/tmp`` of its own."""
    resolved = path.resolve()
    roots = [Path("/usr"), *toolchain_dirs(), prefetch_cache_dir(), scratch.resolve()]
    roots += [Path(bind).resolve() for bind in ro_binds]
    roots += [Path(f"/etc/{name}") for name in ETC_ENTRIES]
    return any(resolved == root or resolved.is_relative_to(root) for root in roots)


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


def setpriv_argv() -> list[str]:
    """Drop from the namespace's root to :data:`SANDBOX_UID`, losing every capability."""
    uid = str(SANDBOX_UID)
    return [
        require_program("setpriv"),
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
    ]


def require_program(program: str) -> str:
    path = shutil.which(program, path=":".join((*SYSTEM_PATH, "/usr/sbin", "/sbin")))
    if not path:
        raise SandboxStartError(f"{program} (util-linux) is required to start sandboxes")
    return str(Path(path).resolve())
