"""The gate: which callers may use gated endpoints.

A user's session and the operator token pass it everywhere (what they then reach is
``accounts.principals``' business). The anonymous local-dev caller
(:class:`~matrixcloud.api.authentication.LocalDevPrincipal`) passes it only on the
endpoints the original server answered without a token in local-dev (docs/COMPATIBILITY.md#c-05):
jobs, sandboxes, MatrixShell, model-source resolution and the platform reads. The
original's session-only endpoints (``/v1/cloud/*``, model profiles and installations)
and every endpoint added since (members, invitations, runtime and join-token
management) answer it 401, as they did there. The list is of paths, so an endpoint
added later is closed to it until someone decides otherwise (fails closed).
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from matrixcloud.api.authentication import caller_is_local_dev, require_principal
from matrixcloud.errors import Unauthorized

# Exact paths, and prefixes that end in "/", the local-dev caller may use.
LOCAL_DEV_PATHS = frozenset({
    "/v1/runtimes",
    "/v1/catalog",
    "/v1/policies",
    "/v1/system/storage",
    "/v1/jobs",
    "/v1/sandbox/sessions",
    "/v1/model-sources/resolve",
})  # fmt: skip
LOCAL_DEV_PREFIXES = ("/v1/jobs/", "/v1/sandbox/sessions/", "/v1/matrixshell/")
SESSION_REQUIRED = (
    "not authenticated: this endpoint needs a session (sign in) or the operator token; "
    "anonymous local-dev access covers jobs, sandboxes, MatrixShell and the platform "
    "endpoints only"
)


def local_dev_may_use(path: str) -> bool:
    """Whether the anonymous local-dev caller may use the endpoint at ``path``."""
    return path in LOCAL_DEV_PATHS or path.startswith(LOCAL_DEV_PREFIXES)


class PassesGate(BasePermission):
    """Any recognised principal: a user session, the operator, or (on its endpoints)
    the anonymous local-dev caller."""

    def has_permission(self, request: Request, view: Any) -> bool:
        require_principal(request)
        if caller_is_local_dev(request) and not local_dev_may_use(request.path_info):
            raise Unauthorized(SESSION_REQUIRED)
        return True
