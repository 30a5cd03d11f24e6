"""Fail the installations whose model.attach job already ended without settling them.

From this release a job's end settles them (``AttachHandler.ended``, called in the
transaction that ends the job); before, the installation list did it when it was read.
This settles, once, the rows an older release left for that read.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations
from django.utils import timezone

ACTIVE = ("queued", "checking", "downloading", "verifying", "attached")
ENDED_UNFINISHED = ("error", "cancelled", "expired")  # terminal, but not complete


def fail_unsettled(apps: Any, schema_editor: Any) -> None:
    installation_model = apps.get_model("models_registry", "ModelInstallation")
    profile_model = apps.get_model("models_registry", "ModelProfile")
    job_model = apps.get_model("jobs", "Job")
    unsettled = installation_model.objects.filter(status__in=ACTIVE).exclude(job_id="")
    now = timezone.now()
    for installation in unsettled.iterator():
        job = (
            job_model.objects.filter(pk=installation.job_id, status__in=ENDED_UNFINISHED)
            .values("status", "error")
            .first()
        )
        if job is None:
            continue
        reason = job["error"] or f"the model.attach job ended {job['status']}"
        installation_model.objects.filter(pk=installation.pk).update(
            status="failed", error=reason, updated_at=now
        )
        if installation.profile_id:
            profile_model.objects.filter(pk=installation.profile_id).update(
                status="failed", error=reason, updated_at=now
            )


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0001_initial"),
        ("models_registry", "0001_initial"),
    ]

    operations = [migrations.RunPython(fail_unsettled, migrations.RunPython.noop)]
