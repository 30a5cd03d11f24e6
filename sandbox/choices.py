"""Choices of the sandbox app: how a tool call ended, and why a host refused one."""

from __future__ import annotations

from django.db import models


class ToolCallOutcome(models.TextChoices):
    """How one tool call ended.

    ``ok``: the server answered with a result; ``tool_error``: it answered with
    ``isError: true`` (still a 200); ``protocol_error``: the call failed at the MCP level
    (an error object, the server exited, a malformed answer); ``timeout``: no answer in
    time; ``refused``: it never reached the server (not ready, ended, host gone).
    """

    OK = "ok", "ok"
    TOOL_ERROR = "tool_error", "tool error"
    PROTOCOL_ERROR = "protocol_error", "protocol error"
    TIMEOUT = "timeout", "timeout"
    REFUSED = "refused", "refused"


class CallFailure(models.TextChoices):
    """The ``kind`` of a host's negative ``sandbox.reply``."""

    PROTOCOL_ERROR = "protocol_error", "protocol error"
    TIMEOUT = "timeout", "timeout"
    NOT_READY = "not_ready", "not ready"
    ENDED = "ended", "ended"
