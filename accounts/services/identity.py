"""Shared rules of accounts: email, name and password policy, workspace slugs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError

from accounts.models import (
    Membership,
    SessionToken,
    User,
    Workspace,
)
from accounts.principals import LOCAL_WORKSPACE_SLUG
from matrixcloud.errors import BadRequest

EMAIL_RE = re.compile(r"^[^\s@]+@[^\s@]+\.[^\s@]+$")


@dataclass(frozen=True)
class IssuedSession:
    """A new session: the token (shown once), its row, and the membership it acts in."""

    token: str
    session: SessionToken
    membership: Membership


def normalise_email(email: str) -> str:
    return email.strip().lower()


def workspace_slug_base(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")
    return slug or "workspace"


def unique_slug(name: str) -> str:
    """A free slug for a new workspace named ``name``; never ``local``, which is kept
    for the local workspace (anonymous local-dev callers act as its Owner, so a
    signed-up workspace must never become it)."""
    base = workspace_slug_base(name)[:100]
    taken = set(Workspace.objects.filter(slug__startswith=base).values_list("slug", flat=True))
    taken.add(LOCAL_WORKSPACE_SLUG)
    if base not in taken:
        return base
    n = 1
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def check_password_policy(password: str, user: User | None = None) -> None:
    if len(password) > settings.PASSWORD_MAX_LENGTH:
        raise BadRequest(f"password must be at most {settings.PASSWORD_MAX_LENGTH} characters")
    try:
        validate_password(password, user=user)
    except ValidationError as exc:
        raise BadRequest(" ".join(exc.messages)) from exc


def valid_email(email: str) -> str:
    email = normalise_email(email)
    if not EMAIL_RE.match(email) or len(email) > 254:
        raise BadRequest("enter a valid email address")
    return email


def valid_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise BadRequest("name is required")
    limit = User._meta.get_field("name").max_length
    if limit is not None and len(name) > limit:
        raise BadRequest(f"name must be at most {limit} characters")
    return name


def primary_membership(user: User) -> Membership | None:
    return (
        Membership.objects.select_related("workspace")
        .filter(user=user)
        .order_by("created_at", "pk")
        .first()
    )
