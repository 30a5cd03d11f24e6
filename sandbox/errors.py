"""Errors of starting sandboxes (the policy's own refusals are in sandbox/policy.py)."""

from __future__ import annotations

from matrixcloud.errors import ApplicationError, ServiceUnavailable, UnprocessableEntity


class IsolationUnavailable(ServiceUnavailable):
    """Sandboxes cannot be isolated here and this mode refuses to run them without it."""


class SandboxStartError(ApplicationError):
    """The sandbox could not be set up (bubblewrap failed before the server started)."""


class SessionRefused(UnprocessableEntity):
    """A session the sandbox policy refuses for a reason other than its command or env
    (an unsupported transport, network where none is allowed)."""
