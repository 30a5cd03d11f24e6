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
from sandbox.isolation import SandboxSpec

CONSOLE_SCRIPT = "matrixsh"
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
