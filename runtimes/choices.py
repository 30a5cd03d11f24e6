"""Choices for the runtimes app."""

from django.db import models


class ProcessRole(models.TextChoices):
    """The roles of this installation's processes (ARCHITECTURE.md, Processes)."""

    WEB = "web", "web"
    WORKER = "worker", "worker"
    SANDBOX_HOST = "sandbox_host", "sandbox host"
