"""Factories for accounts tests: a cast built through the real services, sessions, a clock.

The cast (an Owner, an Admin and a Member of one workspace, and an outsider who owns
another) costs four Argon2 hashes, so it is built once per module inside a transaction
that is rolled back when the module ends; each test runs in its own savepoint within it.
Modules use it with ``cast = factories.cast``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from accounts.choices import Role
from accounts.models import Membership, User, Workspace
from accounts.outbox import outbox_deliver
from accounts.principals import Actor
from accounts.services import (
    invitation_accept,
    invitation_create,
    local_workspace,
    session_issue,
    user_signup,
)

PASSWORD = "violet harbour lantern 42"
TOKEN_RE = r"{prefix}_[0-9a-f]{{64}}"


@dataclass(frozen=True)
class Cast:
    """Who a module's tests act as; every member's password is ``PASSWORD``."""

    workspace: Workspace
    owner: User
    admin: User
    member: User
    other_workspace: Workspace
    outsider: User
    password: str = PASSWORD


def signup(
    name: str, email: str, workspace: str = "", password: str = PASSWORD
) -> tuple[User, Workspace, str]:
    """Sign someone up through the service: the Owner, the new workspace, a session token."""
    issued = user_signup(name=name, email=email, password=password, workspace_name=workspace)
    return issued.membership.user, issued.membership.workspace, issued.token


def actor_of(
    workspace: Workspace | None = None, user: User | None = None, *, name: str = ""
) -> Actor:
    """The ``Actor`` a test hands a service: ``user`` with their role in ``workspace``
    (the local workspace when None), or without a user an operator audited as ``name``
    (default ``test``). A ``name`` with a user overrides how audit records name them."""
    workspace = workspace or local_workspace()
    if user is None:
        return Actor.operator(workspace, name=name or "test")
    member = Membership.objects.filter(user=user, workspace=workspace).first()
    role = member.role if member else Role.MEMBER
    return Actor(workspace=workspace, role=role, user=user, member=member, audit_name=name)


def join(
    workspace: Workspace, inviter: User, *, name: str, email: str, role: str = Role.MEMBER
) -> User:
    """Invite ``email`` and accept the invitation as a new account (the real two steps)."""
    _, secret = invitation_create(actor=actor_of(workspace, inviter), email=email, role=role)
    issued = invitation_accept(token=secret, password=PASSWORD, name=name)
    return issued.membership.user


def build_cast() -> Cast:
    owner, workspace, _ = signup("Olivia Owner", "owner@northwind.test", "Northwind")
    admin = join(workspace, owner, name="Adam Admin", email="admin@northwind.test", role="Admin")
    member = join(workspace, owner, name="Mina Member", email="member@northwind.test")
    outsider, other, _ = signup("Oscar Outsider", "outsider@globex.test", "Globex")
    outbox_deliver()  # the cast's own emails go now (into locmem, emptied for each test)
    return Cast(
        workspace=workspace,
        owner=owner,
        admin=admin,
        member=member,
        other_workspace=other,
        outsider=outsider,
    )


@pytest.fixture(scope="module")
def cast(django_db_setup: None, django_db_blocker: Any) -> Iterator[Cast]:
    """The module's cast, rolled back with the module."""
    with django_db_blocker.unblock():
        outer = transaction.atomic()
        outer.__enter__()
        try:
            built = build_cast()
        except BaseException:
            outer.__exit__(None, None, None)
            raise
    yield built
    with django_db_blocker.unblock():
        transaction.set_rollback(True)
        outer.__exit__(None, None, None)


def issue(user: User, workspace: Workspace | None = None) -> str:
    """A new session token for ``user`` (in ``workspace``, else their first one)."""
    memberships = Membership.objects.select_related("workspace").filter(user=user)
    if workspace is not None:
        memberships = memberships.filter(workspace=workspace)
    membership = memberships.order_by("created_at", "pk").first()
    assert membership is not None, f"{user} is not a member there"
    return session_issue(user=user, membership=membership).token


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"{scheme} {token}"}


def error(message: str, status: int) -> dict[str, Any]:
    """The one error shape of the API."""
    return {"error": message, "status": status}


def token_in(text: str, prefix: str) -> str:
    """The one ``<prefix>_<64 hex>`` secret in an email body."""
    found = re.findall(TOKEN_RE.format(prefix=prefix), text)
    assert len(found) == 1, f"expected one {prefix}_ token in {text!r}"
    return found[0]


class FrozenClock:
    """A stand-in for ``django.utils.timezone.now`` that moves only when told."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    """Freeze ``timezone.now`` at the present (mid-minute) until a test moves it."""
    start = timezone.now().replace(second=30, microsecond=0)
    frozen = FrozenClock(start)
    monkeypatch.setattr(timezone, "now", frozen)
    return frozen


@pytest.fixture
def outbox(settings: Any) -> Iterator[list[Any]]:
    """Emails as the worker sends them: each wake this process sends for an app's sweep
    runs that sweep here, at once (the email outbox's delivery), into locmem."""
    from django.core import mail

    from matrixcloud.lib import sweeps, wake

    def sweep(message: dict[str, Any]) -> None:
        if message.get("sweep"):
            sweeps.sweep_app(message["sweep"])

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with wake.listening(sweep):
        yield mail.outbox  # pytest-django empties it before each test
