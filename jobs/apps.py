"""Jobs: typed background jobs and their event streams."""

from django.apps import AppConfig


class JobsConfig(AppConfig):
    """Jobs: typed background jobs and their event streams."""

    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"
