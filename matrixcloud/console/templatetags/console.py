"""Template helpers of the console."""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings

from accounts.models import Membership, User
from matrixcloud.console.access import WORKSPACE_KEY
from matrixcloud.console.selectors import memberships_of

register = template.Library()


@register.simple_tag
def matrixshell_enabled() -> bool:
    """Whether this installation runs MatrixShell (its page is listed only then)."""
    return bool(settings.MATRIX_MATRIXSHELL_ENABLED)


@register.simple_tag(takes_context=True)
def workspace_switcher(context: template.Context) -> dict[str, Any]:
    """The signed-in user's workspaces and which one the console acts in."""
    request = context["request"]
    user = request.user
    memberships: list[Membership] = memberships_of(user) if isinstance(user, User) else []
    current = request.session.get(WORKSPACE_KEY) or (
        memberships[0].workspace_id if memberships else ""
    )
    return {"memberships": memberships, "current": current}
