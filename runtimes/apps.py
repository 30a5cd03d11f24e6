"""Runtimes: this installation, registered remote runtimes, join tokens."""

from django.apps import AppConfig


class RuntimesConfig(AppConfig):
    """Runtimes: this installation, registered remote runtimes, join tokens."""

    name = "runtimes"
    default_auto_field = "django.db.models.BigAutoField"
