"""What a sandbox runs and under which limits: the description both the isolation
tiers (``sandbox.isolation``) and the bubblewrap command line (``sandbox.bubblewrap``)
read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

MB = 1024 * 1024


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
    system, the toolchains and the prefetch cache. ``egress_socket`` is the session's
    egress proxy (sandbox/egress): under bubblewrap its only route out, bound into the
    sandbox and relayed to ``127.0.0.1:3128`` there, where ``HTTP(S)_PROXY`` point.
    """

    argv: Sequence[str]
    scratch_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    allow_network: bool = False
    limits: SandboxLimits = field(default_factory=SandboxLimits.from_settings)
    ro_binds: Sequence[Path] = ()
    egress_socket: Path | None = None
