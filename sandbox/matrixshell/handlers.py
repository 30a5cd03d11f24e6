"""The ``matrixshell.install`` job: create the workspace's venv and pip-install MatrixShell.

Run by a worker. Every step runs isolated like a sandbox, as the sandbox user, in the
workspace's MatrixShell dir: ``python -m venv`` (from this server's base Python), then
``python -m pip install <spec>``, each output line streamed as an ``install`` event as
pip prints it. The spec is the operator's (``MATRIX_RUNTIME_MATRIXSHELL_SPEC``,
``matrixsh`` from PyPI by default): an index spec installs with network (pip needs the
index), a local wheel or package dir (for offline installs) without, with
``--no-index``; a package dir is copied into the workspace first so its build can
write next to its sources. Two installs of one workspace never overlap (a file lock).
The workspace's dir is on its disk quota first (made here on the first install): an
install that does not fit fails naming the quota and its setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone
from pydantic import model_validator
from pydantic_core import PydanticCustomError

from jobs.handlers import BaseHandler, JobFailed, JobParams
from jobs.registry import register
from matrixcloud.errors import ApplicationError
from sandbox.matrixshell.process import RunOutcome, isolated_run
from sandbox.matrixshell.services import (
    DISABLED,
    INSTALL_JOB_TYPE,
    matrixshell_disk_full,
    matrixshell_disk_ready,
    matrixshell_version,
)
from sandbox.matrixshell.workspace import ShellPaths, base_python, local_spec, shell_spec

INSTALL_OUTPUT_CAP = 16 * 1024 * 1024
TIME_MARGIN = 5.0
SOURCE_COPY = ".matrixshell-src"
PIP_OPTIONS = ("--no-input", "--progress-bar", "off", "--no-cache-dir", "--upgrade")


class MatrixShellInstallParams(JobParams):
    """No parameters (the spec is the operator's); refused while MatrixShell is off, so
    ``POST /v1/jobs`` cannot go around the endpoints' gate (a job queued before it was
    turned off fails when a worker validates it again)."""

    @model_validator(mode="after")
    def _enabled(self) -> MatrixShellInstallParams:
        if not settings.MATRIX_MATRIXSHELL_ENABLED:
            raise PydanticCustomError("matrixshell_disabled", DISABLED)
        return self


@register(INSTALL_JOB_TYPE)
class MatrixShellInstallHandler(BaseHandler):
    """Install MatrixShell into the job's workspace; the result is its status."""

    Params = MatrixShellInstallParams

    def run(self) -> dict[str, Any]:
        paths = ShellPaths.for_workspace(self.ctx.job.workspace_id)
        self.ctx.emit("queue", "ok", "Preparing MatrixShell sandbox")
        with self._locked(paths):
            try:
                matrixshell_disk_ready(paths, create=True)
            except ApplicationError as exc:
                raise JobFailed(exc.message) from exc
            if not paths.python.exists():
                self._create_venv(paths)
            self._pip_install(paths, settings.MATRIX_MATRIXSHELL_SPEC)
            version = matrixshell_version(paths)
        if not version:
            raise JobFailed("matrixsh installed but its version could not be resolved")
        self.ctx.emit("install", "running", f"matrixsh {version} ready in the sandbox")
        self.ctx.emit("ready", "ok", f"MatrixShell {version} installed in sandbox")
        return {
            "installed": True,
            "version": version,
            "venv": str(paths.venv),
            "sandbox": str(paths.root),
            "python": str(paths.python),
        }

    @contextlib.contextmanager
    def _locked(self, paths: ShellPaths) -> Iterator[None]:
        paths.lock.parent.mkdir(parents=True, exist_ok=True)
        with paths.lock.open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JobFailed(
                    "another MatrixShell install is running in this workspace"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _create_venv(self, paths: ShellPaths) -> None:
        self.ctx.emit("install", "running", f"creating python sandbox venv: {paths.venv}")
        self._step(paths, [base_python(), "-m", "venv", str(paths.venv)], what="create the venv")

    def _pip_install(self, paths: ShellPaths, spec: str) -> None:
        local = local_spec(spec)
        target, binds, extra = spec, [], []
        if local is not None:
            if not local.exists():
                raise JobFailed(f"the MatrixShell install spec {spec} does not exist")
            target, binds, extra = str(local), [local], ["--no-index"]
            if local.is_dir():
                target = self._copy_source(paths, local)
        self.ctx.emit(
            "install", "running", f"installing MatrixShell ({spec}) — this is a real pip install"
        )
        argv = ["python", "-m", "pip", "install", *PIP_OPTIONS, *extra, target]
        self._step(paths, argv, what="pip install", network=local is None, binds=binds)

    def _copy_source(self, paths: ShellPaths, source: Path) -> str:
        """Copy a package dir into the workspace (inside the sandbox, as its user)."""
        copy = paths.root / SOURCE_COPY / source.name
        script = 'rm -rf -- "$1" && mkdir -p -- "$(dirname -- "$1")" && cp -r -- "$2" "$1"'
        argv = ["bash", "-c", script, "copy", str(copy), str(source)]
        self._step(paths, argv, what="copy the package dir", binds=[source], quiet=True)
        return str(copy)

    def _step(
        self,
        paths: ShellPaths,
        argv: Sequence[str],
        *,
        what: str,
        network: bool = False,
        binds: Sequence[Path] = (),
        quiet: bool = False,
    ) -> None:
        spec = shell_spec(paths, argv, allow_network=network, ro_binds=binds)
        outcome = self._stream(spec, quiet=quiet)
        self.ctx.check()
        if outcome.timed_out:
            raise JobFailed(f"{what}: ran out of time")
        if outcome.exit_code != 0:
            tail = (
                outcome.stderr.strip().splitlines()[-1:] or outcome.stdout.strip().splitlines()[-1:]
            )
            detail = f": {tail[0]}" if tail else ""
            full = matrixshell_disk_full(paths, outcome.stdout + outcome.stderr)
            if full:
                detail += f"; {full}"
            raise JobFailed(f"{what}: exit status {outcome.exit_code}{detail}")

    def _stream(self, spec: Any, *, quiet: bool) -> RunOutcome:
        """Run ``spec`` in a thread of its own; its lines become events in this one (the
        job's thread, which holds the database connection)."""
        lines: queue.Queue[str | None] = queue.Queue()
        box: dict[str, Any] = {}
        timeout = (self.ctx.job.expires_at - timezone.now()).total_seconds() + TIME_MARGIN

        def target() -> None:
            try:
                box["outcome"] = asyncio.run(
                    isolated_run(
                        spec,
                        timeout=max(timeout, 1.0),
                        output_cap=INSTALL_OUTPUT_CAP,
                        on_line=None if quiet else lines.put,
                        should_stop=lambda: self.ctx.interrupted,
                    )
                )
            except BaseException as exc:  # handed to the job's thread below
                box["error"] = exc
            finally:
                lines.put(None)

        thread = threading.Thread(target=target, name=f"install-{self.ctx.job.pk}", daemon=True)
        thread.start()
        while (line := lines.get()) is not None:  # ends: the run is bounded by its timeout
            self.ctx.emit("install", "running", line)
        thread.join()
        if "error" in box:
            raise JobFailed(f"the sandbox could not start: {box['error']}") from box["error"]
        outcome: RunOutcome = box["outcome"]
        return outcome
