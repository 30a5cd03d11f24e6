"""Errors of starting sandboxes (the policy's own refusals are in sandbox/policy.py)."""

from __future__ import annotations

from matrixcloud.errors import ApplicationError, ServiceUnavailable


class IsolationUnavailable(ServiceUnavailable):
    """Sandboxes cannot be isolated here and this mode refuses to run them without it."""


class SandboxStartError(ApplicationError):
    """The sandbox could not be set up (bubblewrap failed before the server started)."""
