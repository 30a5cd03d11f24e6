"""Jobs: typed background jobs and their event streams."""

from importlib import import_module

from django.apps import AppConfig
from django.conf import settings


class JobsConfig(AppConfig):
    """Jobs: typed background jobs and their event streams.

    Domain apps register their handlers in their own ``ready()``; modules named in
    ``MATRIX_RUNTIME_EXTRA_JOB_MODULES`` (e.g. the test suite's handlers) are imported
    here so every process (web, worker, host) knows the same types.
    """

    name = "jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        for module in settings.MATRIX_EXTRA_JOB_MODULES:
            import_module(module)
