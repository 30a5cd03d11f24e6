"""Where a workspace's MatrixShell lives and how its processes are specified.

``<data>/matrixshell/<workspace id>/`` is the workspace's working dir, its HOME and
the sandbox's scratch dir; the venv is ``.venv`` inside it, so the isolation shows the
venv (read-write, it is the workspace's own) and nothing else of the data dir. The
lock file that keeps two installs apart sits next to the dir, out of the commands'
reach.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from sandbox.bubblewrap import toolchain_path
from sandbox.isolation import SandboxSpec, isolation_tier, scratch_owner
from sandbox.quota import (
    TIER_NONE,
    DiskUsage,
    QuotaSupport,
    persistent_image,
    persistent_mount,
    persistent_support,
    persistent_usage,
)

CONSOLE_SCRIPT = "matrixsh"
QUOTA_SETTING = "MATRIX_RUNTIME_MATRIXSHELL_DISK_MB"
DISK_KIND = "matrixshell"
VERSION_PROBE = "import importlib.metadata as m; print(m.version('matrixsh'))"


@dataclass(frozen=True)
class ShellPaths:
    """The dirs and files of one workspace's MatrixShell."""

    root: Path

    @classmethod
    def for_workspace(cls, workspace_id: str) -> ShellPaths:
        return cls(Path(settings.MATRIX_DATA_DIR).resolve() / "matrixshell" / workspace_id)

    @property
    def venv(self) -> Path:
        return self.root / ".venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def console_script(self) -> Path:
        return self.venv / "bin" / CONSOLE_SCRIPT

    @property
    def lock(self) -> Path:
        return self.root.with_name(f"{self.root.name}.lock")

    @property
    def image(self) -> Path:
        return persistent_image(DISK_KIND, self.root.name)


def shell_quota_support() -> QuotaSupport:
    """Whether workspaces' MatrixShell dirs get their disk quota here, and why (not)."""
    return persistent_support(
        settings.MATRIX_MATRIXSHELL_DISK_MB, QUOTA_SETTING, "each workspace's MatrixShell dir"
    )


def shell_disk_mount(paths: ShellPaths, *, create: bool) -> bool:
    """Put the workspace's dir on its quota file system (made first when ``create``, or
    when the dir already holds files from before the quota); False without a quota.
    Raises OSError (or a subprocess error) when mounting fails."""
    if shell_quota_support().tier == TIER_NONE:
        return False
    return persistent_mount(
        paths.root,
        paths.image,
        size_mb=settings.MATRIX_MATRIXSHELL_DISK_MB,
        owner=scratch_owner(isolation_tier()),
        create=create,
    )


def shell_disk_usage(paths: ShellPaths) -> DiskUsage | None:
    """The use and limit of the workspace's mounted quota file system; None without one."""
    return persistent_usage(paths.root, paths.image)


def base_python() -> str:
    """The interpreter venvs are made from: this server's base Python (bound read-only
    in every sandbox, so the venv's ``home`` resolves inside)."""
    for name in ("python3", "python"):
        candidate = Path(sys.base_prefix) / "bin" / name
        if candidate.exists():
            return str(candidate)
    return sys.executable


def local_spec(spec: str) -> Path | None:
    """The path of a spec naming a local wheel or package dir, else None (an index spec)."""
    if not spec.startswith(("/", "./", "../", "file:")):
        return None
    path = Path(spec.removeprefix("file://").removeprefix("file:")).resolve()
    return path


def shell_spec(
    paths: ShellPaths,
    argv: Sequence[str],
    *,
    allow_network: bool = False,
    ro_binds: Sequence[Path] = (),
) -> SandboxSpec:
    """A sandbox running ``argv`` in the workspace's dir with its venv first on PATH.

    PATH is a reserved sandbox variable, so ``env`` (coreutils) sets it as the first
    program inside; ``VIRTUAL_ENV`` goes in the clean environment like any entry.
    """
    search = ":".join([str(paths.venv / "bin"), *toolchain_path()])
    return SandboxSpec(
        argv=["/usr/bin/env", f"PATH={search}", *argv],
        scratch_dir=paths.root,
        env={"VIRTUAL_ENV": str(paths.venv), "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        allow_network=allow_network,
        ro_binds=tuple(ro_binds),
    )
