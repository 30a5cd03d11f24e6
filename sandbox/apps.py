"""Sandboxes: isolated MCP servers, tool calls and MatrixShell."""

from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """Sandboxes: isolated MCP servers, tool calls and MatrixShell."""

    name = "sandbox"
    default_auto_field = "django.db.models.BigAutoField"
