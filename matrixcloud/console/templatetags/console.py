"""Template helpers of the console."""

from __future__ import annotations

from django import template
from django.conf import settings

register = template.Library()


@register.simple_tag
def matrixshell_enabled() -> bool:
    """Whether this installation runs MatrixShell (its page is listed only then)."""
    return bool(settings.MATRIX_MATRIXSHELL_ENABLED)
