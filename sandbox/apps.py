"""Sandboxes: isolated MCP servers, tool calls and MatrixShell."""

from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """Sandboxes: isolated MCP servers, tool calls and MatrixShell.

    ``ready()`` registers the session job types (``mcp.test``, ``mcp.run``,
    ``tool.run``) so every process (web, worker, host) knows them.
    """

    name = "sandbox"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from sandbox import handlers  # noqa: F401  (registers the session job types)
        from sandbox.agent import handlers as _agent  # noqa: F401  (agent.run)
        from sandbox.matrixshell import handlers as _shell  # noqa: F401  (matrixshell.install)
