"""Django admin for the models registry: operators see every workspace's profiles and
installations (status, progress, reason of a failure). Only the services and the
``model.attach`` job write these rows, so nothing is edited here."""

from __future__ import annotations

from django.contrib import admin

from matrixcloud.lib.admin import ReadOnlyAdmin
from models_registry.models import ModelInstallation, ModelProfile


@admin.register(ModelProfile)
class ModelProfileAdmin(ReadOnlyAdmin):
    """Imported models, newest first."""

    list_display = ("id", "display_name", "provider", "status", "workspace", "created_at")
    list_filter = ("status", "provider", "source_type")
    search_fields = ("id", "display_name", "external_id", "source_uri", "workspace__slug")
    list_select_related = ("workspace",)
    ordering = ("-created_at",)


@admin.register(ModelInstallation)
class ModelInstallationAdmin(ReadOnlyAdmin):
    """Installations of profiles on runtimes, with their progress and failures."""

    list_display = (
        "id", "profile", "runtime_id", "install_mode", "status", "progress", "workspace",
        "updated_at",
    )  # fmt: skip
    list_filter = ("status", "install_mode", "serving_engine")
    search_fields = ("id", "job_id", "runtime_id", "profile__display_name", "workspace__slug")
    list_select_related = ("workspace", "profile")
    ordering = ("-created_at",)
