"""Model profiles and installations.

An attach the original was running lived in its memory and did not survive it: such
installations (and their profiles) arrive ``failed``, saying so
(docs/COMPATIBILITY.md#f-07).
"""

from __future__ import annotations

from matrixcloud.importer.mapping.context import Context
from matrixcloud.importer.plan import Target
from matrixcloud.importer.source import Row
from matrixcloud.importer.values import EPOCH, integer, parse_json, text, time_or
from models_registry.choices import InstallationStatus, InstallMode, ProfileStatus
from models_registry.models import ModelInstallation, ModelProfile

INTERRUPTED = "the original's attach job did not survive the move to MatrixCloud; attach again"
INTERRUPTED_PROFILE = frozenset({ProfileStatus.QUEUED, ProfileStatus.DOWNLOADING})
PROFILE_TEXT = {
    "source_type": 40,
    "source_uri": 1000,
    "provider": 100,
    "external_id": 300,
    "display_name": 300,
    "task": 100,
    "library": 100,
    "license": 200,
}


def profile(ctx: Context, row: Row) -> Target | None:
    if ctx.orphan("model profiles", row):
        return None
    status, error = str(row["status"] or ""), ""
    if status in INTERRUPTED_PROFILE:
        status, error = ProfileStatus.FAILED, INTERRUPTED
        ctx.tally["model profiles whose attach was in progress (now failed)"] += 1
    elif status not in ProfileStatus.values:
        ctx.tally[f"model profiles with the unknown status {status!r} (profile_only)"] += 1
        status = ProfileStatus.PROFILE_ONLY
    created = time_or(row["created_at"], EPOCH)
    return Target(
        table="model profiles",
        model=ModelProfile,
        key={"pk": row["id"]},
        fields={
            "id": row["id"],
            "workspace_id": row["workspace_id"],
            **{name: text(row[name], limit) for name, limit in PROFILE_TEXT.items()},
            "tags": parse_json(row["tags_json"], None),
            "metadata": parse_json(row["metadata_json"], None),
            "status": status,
            "error": error,
            "created_at": created,
            "updated_at": time_or(row["updated_at"], created),
        },
        label=f"model profile {row['id']}",
        owners=ctx.owners(row),
    )


def installation(ctx: Context, row: Row) -> Target | None:
    if ctx.orphan("model installations", row):
        return None
    status, error = str(row["status"] or ""), ""
    if status in InstallationStatus.active() or status not in InstallationStatus.values:
        status, error = InstallationStatus.FAILED, INTERRUPTED
        ctx.tally["model installations in progress (now failed)"] += 1
    mode = str(row["install_mode"] or "")
    if mode not in InstallMode.values:
        ctx.tally[f"installations with the unknown install mode {mode!r}"] += 1
        mode = InstallMode.PULL_FROM_SOURCE
    profile_id = row["model_profile_id"] if row["model_profile_id"] in ctx.profiles else None
    created = time_or(row["created_at"], EPOCH)
    return Target(
        table="model installations",
        model=ModelInstallation,
        key={"pk": row["id"]},
        fields={
            "id": row["id"],
            "workspace_id": row["workspace_id"],
            "profile_id": profile_id,
            "runtime_id": text(row["runtime_id"], 64),
            "install_mode": mode,
            "serving_engine": text(row["serving_engine"], 40),
            "status": status,
            "progress": max(0, min(100, integer(row["progress"]))),
            "local_path": text(row["local_path"], 1000),
            "endpoint_url": text(row["endpoint_url"], 1000),
            "job_id": text(row["job_id"], 32),
            "error": error,
            "created_at": created,
            "updated_at": time_or(row["updated_at"], created),
        },
        label=f"model installation {row['id']}",
        owners=ctx.owners(row),
        optional={"profile_id": ("model profiles", profile_id)} if profile_id else {},
    )
