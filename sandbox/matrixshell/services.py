"""MatrixShell services: the feature gate, status, install (a job) and exec.

Each endpoint first checks the gate (403 when MatrixShell is off), then acts in the
caller's workspace only: its own venv and working dir (:mod:`.workspace`). ``exec``
runs the command with ``bash -lc`` isolated like a sandbox, denylist first, with a
timeout and an output cap, on the workspace's disk quota (a write past it fails with
ENOSPC, and the answer says the quota is full and which setting sets it); every exec,
refused or run, is audited, and every run is metered (``matrixshell.exec``).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from accounts.audit import audit_record
from accounts.choices import AuditStatus
from accounts.models import Workspace
from accounts.principals import Actor
from accounts.services.usage import usage_record
from jobs.choices import JobStatus
from jobs.models import Job
from jobs.services import job_enqueue
from matrixcloud.errors import Conflict, Forbidden, ServiceUnavailable, UnprocessableEntity
from sandbox.errors import SandboxStartError
from sandbox.matrixshell.denylist import command_denied
from sandbox.matrixshell.process import RunOutcome, isolated_run
from sandbox.matrixshell.workspace import (
    QUOTA_SETTING,
    VERSION_PROBE,
    ShellPaths,
    shell_disk_mount,
    shell_disk_usage,
    shell_quota_support,
    shell_spec,
)
from sandbox.quota import TIER_LOOP, TIER_NONE

INSTALL_JOB_TYPE = "matrixshell.install"
INSTALL_TTL_SECONDS = 600
STATUS_TIMEOUT = 8.0
STATUS_OUTPUT_CAP = 64 * 1024
AUDIT_COMMAND_CHARS = 200
DISABLED = "MatrixShell is disabled (set MATRIX_RUNTIME_MATRIXSHELL_ENABLED=true to enable)"
NO_SPACE = "No space left on device"
CLIENT_GONE = "matrixshell: the client went away; the command was stopped"
MIB = 1024 * 1024


def matrixshell_gate() -> None:
    """403 unless MatrixShell is enabled on this installation."""
    if not settings.MATRIX_MATRIXSHELL_ENABLED:
        raise Forbidden(DISABLED)


# --- the disk quota ------------------------------------------------------------------------


def matrixshell_disk_ready(paths: ShellPaths, *, create: bool = False) -> None:
    """The workspace's dir on its quota file system where the host can (see
    ``shell_disk_mount``); 503 naming why when mounting fails."""
    try:
        shell_disk_mount(paths, create=create)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServiceUnavailable(
            f"the workspace's MatrixShell disk ({QUOTA_SETTING}) could not be mounted: {exc}"
        ) from exc


def matrixshell_disk_full(paths: ShellPaths, output: str) -> str:
    """A clear note when the workspace's quota is full (a write failed with ENOSPC, or
    no byte is left); "" otherwise, and always without a quota."""
    usage = shell_disk_usage(paths)
    if usage is None or (NO_SPACE not in output and usage.free_bytes > 0):
        return ""
    return (
        f"matrixshell: the workspace's disk quota is full ({usage.used_bytes} of "
        f"{usage.limit_bytes} bytes used; the quota is {usage.limit_bytes // MIB} MiB, set "
        f"by {QUOTA_SETTING}): delete files to make room, or ask the operator to raise it"
    )


def _disk_report(paths: ShellPaths) -> dict[str, Any]:
    """The quota's tier and why, and the dir's use and limit in bytes (null without one)."""
    support = shell_quota_support()
    usage = shell_disk_usage(paths)
    if usage is not None:  # on its image, whatever the setting says now
        reason = support.reason
        if support.tier == TIER_NONE:
            reason = f"still on its {usage.limit_bytes // MIB} MiB image ({support.reason})"
        return {
            "disk_quota": TIER_LOOP,
            "disk_quota_reason": reason,
            "disk_used_bytes": usage.used_bytes,
            "disk_limit_bytes": usage.limit_bytes,
        }
    bounded = support.tier != TIER_NONE  # the image is made by the first install
    return {
        "disk_quota": support.tier,
        "disk_quota_reason": support.reason,
        "disk_used_bytes": 0 if bounded else None,
        "disk_limit_bytes": settings.MATRIX_MATRIXSHELL_DISK_MB * MIB if bounded else None,
    }


# --- status ------------------------------------------------------------------------------


def matrixshell_version(paths: ShellPaths) -> str:
    """The installed ``matrixsh`` version, read inside the sandbox; "" when not installed."""
    if not paths.python.exists() or not paths.console_script.exists():
        return ""
    spec = shell_spec(paths, ["python", "-c", VERSION_PROBE])
    outcome = asyncio.run(isolated_run(spec, timeout=STATUS_TIMEOUT, output_cap=STATUS_OUTPUT_CAP))
    return outcome.stdout.strip() if outcome.exit_code == 0 else ""


def matrixshell_status(*, workspace: Workspace) -> dict[str, Any]:
    """The workspace's install status, as the contract's ``/v1/matrixshell/status``."""
    paths = ShellPaths.for_workspace(workspace.pk)
    matrixshell_disk_ready(paths)
    version = matrixshell_version(paths)
    return {
        "installed": bool(version),
        "version": version,
        "venv": str(paths.venv),
        "python": str(paths.python) if paths.python.exists() else "",
        "sandbox": str(paths.root),
        "spec": settings.MATRIX_MATRIXSHELL_SPEC,
        **_disk_report(paths),
    }


# --- install -----------------------------------------------------------------------------


def matrixshell_install(*, actor: Actor) -> Job:
    """Start a ``matrixshell.install`` job for the actor's workspace (409 while one is
    active)."""
    workspace = actor.workspace
    ttl = min(INSTALL_TTL_SECONDS, settings.MATRIX_MAX_TTL_SECONDS)
    with transaction.atomic():
        active = Job.objects.filter(
            workspace=workspace, type=INSTALL_JOB_TYPE, status__in=JobStatus.active()
        )
        if active.select_for_update().exists():
            raise Conflict("a MatrixShell install is already running in this workspace")
        return job_enqueue(actor=actor, job_type=INSTALL_JOB_TYPE, payload={}, ttl_seconds=ttl)


# --- exec --------------------------------------------------------------------------------


def _audit_target(command: str) -> str:
    if len(command) <= AUDIT_COMMAND_CHARS:
        return command
    return command[:AUDIT_COMMAND_CHARS] + "…"


@dataclass(frozen=True)
class PreparedExec:
    """An accepted command, about to run: who asked (and where), and what to audit."""

    actor: Actor
    command: str
    paths: ShellPaths

    @property
    def workspace(self) -> Workspace:
        return self.actor.workspace

    @property
    def trimmed(self) -> str:
        return self.command.strip()


def matrixshell_exec_prepare(*, actor: Actor, command: str) -> PreparedExec:
    """Check a command before it runs: 422 for an empty one or a workspace without its
    venv, 403 for a denylisted one (audited as a failure)."""
    if not command.strip():
        raise UnprocessableEntity("empty command")
    if command_denied(command):
        audit_record(
            action="matrixshell.exec",
            actor=actor.id,
            workspace=actor.workspace,
            target=_audit_target(command),
            ip=actor.ip,
            status=AuditStatus.FAILURE,
            meta={"reason": "denylist"},
        )
        raise Forbidden("refused by safety denylist")
    paths = ShellPaths.for_workspace(actor.workspace.pk)
    matrixshell_disk_ready(paths)
    if not paths.python.exists():
        raise UnprocessableEntity("MatrixShell sandbox is not installed yet")
    return PreparedExec(actor, command, paths)


async def matrixshell_exec_run(
    prepared: PreparedExec, *, client_gone: Callable[[], bool] | None = None
) -> RunOutcome:
    """Run the command isolated (``bash -lc`` in the workspace's dir, no network), bounded
    by the timeout and the output cap, and stopped (its whole process tree) once
    ``client_gone`` says nobody waits for the answer any more. Never raises for what the
    command did, nor for a command that could not start: exit code -1 and stderr say so."""
    timeout = settings.MATRIX_MATRIXSHELL_TIMEOUT
    cap = settings.MATRIX_MATRIXSHELL_OUTPUT_BYTES
    spec = shell_spec(prepared.paths, ["bash", "-lc", prepared.trimmed])
    try:
        outcome = await isolated_run(spec, timeout=timeout, output_cap=cap, should_stop=client_gone)
    except (OSError, ValueError, SandboxStartError) as exc:
        return RunOutcome(exit_code=-1, stderr=f"matrixshell: the command could not start: {exc}")
    if outcome.stopped:
        outcome.stderr += f"\n{CLIENT_GONE}\n"
    elif outcome.timed_out:
        outcome.stderr += f"\nmatrixshell: the command ran past {timeout:g} s and was killed\n"
    elif outcome.truncated:
        outcome.stderr += f"\nmatrixshell: output passed {cap} bytes; the command was killed\n"
    full = await asyncio.to_thread(
        matrixshell_disk_full, prepared.paths, outcome.stdout + outcome.stderr
    )
    if full:
        outcome.disk_full = True
        outcome.stderr += f"\n{full}\n"
    return outcome


def matrixshell_exec_record(prepared: PreparedExec, outcome: RunOutcome) -> dict[str, Any]:
    """Audit and meter a command that ran; the contract's answer (plus why it was cut
    short and how long it took). One stopped because its client went away is audited as
    a failure with that reason (``stopped``)."""
    meta = {key: value for key, value in asdict(outcome).items() if key not in ("stdout", "stderr")}
    if outcome.stopped:
        meta["reason"] = "client_gone"
    with transaction.atomic():
        audit_record(
            action="matrixshell.exec",
            actor=prepared.actor.id,
            workspace=prepared.workspace,
            target=_audit_target(prepared.command),
            ip=prepared.actor.ip,
            status=AuditStatus.FAILURE if outcome.stopped else AuditStatus.SUCCESS,
            meta=meta,
        )
        usage_record(
            workspace=prepared.workspace,
            kind="matrixshell.exec",
            user=prepared.actor.user,
            meta={"exit_code": outcome.exit_code},
        )
    return {
        "command": prepared.command,
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
        "exit_code": outcome.exit_code,
        "timed_out": outcome.timed_out,
        "truncated": outcome.truncated,
        "disk_full": outcome.disk_full,
        "duration_ms": outcome.duration_ms,
    }


def matrixshell_exec(
    *,
    actor: Actor,
    command: str,
    client_gone: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Check, run, audit and meter one command, waiting for it in this thread (stopped
    when ``client_gone``)."""
    prepared = matrixshell_exec_prepare(actor=actor, command=command)
    run = asyncio.run(matrixshell_exec_run(prepared, client_gone=client_gone))
    return matrixshell_exec_record(prepared, run)
