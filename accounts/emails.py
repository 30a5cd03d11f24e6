"""Account emails: composed here, queued in the outbox in the transaction of the change
that asks for them, sent by the worker's sweep (``accounts.outbox``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from accounts.models import OutboxEmail
from matrixcloud.lib.wake import wake_workers

SUBJECTS = {
    "verify": "Welcome to MatrixCloud: verify your email",
    "password_reset": "Reset your MatrixCloud password",
    "invite": "You are invited to a MatrixCloud workspace",
}
# An outbox row of this kind asks for a reset link; the worker makes it (if the account
# exists) when it delivers the row, so no reset secret is ever stored.
RESET_REQUEST = "password_reset_request"


def compose(kind: str, *, secret: str, name: str = "", workspace_name: str = "") -> str:
    base = settings.MATRIX_PUBLIC_URL
    greeting = f"Hello {name}," if name else "Hello,"
    if kind == "verify":
        link = f"{base}/verify?token={secret}"
        return f"{greeting}\n\nYour workspace is ready. Verify your email:\n{link}\n"
    if kind == "password_reset":
        link = f"{base}/reset?token={secret}"
        return (
            f"{greeting}\n\nSomeone asked to reset your password. This link works once and "
            f"expires in 1 hour:\n{link}\n\nIf it was not you, ignore this email.\n"
        )
    if kind == "invite":
        link = f"{base}/invite?token={secret}"
        return f"{greeting}\n\nYou are invited to join {workspace_name}:\n{link}\n"
    raise ValueError(f"unknown email kind {kind!r}")


def email_queue(
    kind: str,
    *,
    secret: str = "",
    user: Any = None,
    email: str = "",
    workspace_name: str = "",
    ip: str = "",
) -> OutboxEmail:
    """Queue an account email in the outbox, in the caller's transaction (it is sent
    only if that commits); the workers are woken once it does."""
    now = timezone.now()
    row = OutboxEmail.objects.create(
        kind=kind,
        created_at=now,
        due_at=now,
        to=user.email if user is not None else email,
        name=getattr(user, "name", "") if user is not None else "",
        workspace_name=workspace_name,
        secret=secret,
        ip=ip,
    )
    transaction.on_commit(lambda: wake_workers(sweep="accounts"))
    return row


def email_send(
    kind: str, *, to: str, secret: str, name: str = "", workspace_name: str = ""
) -> None:
    """Send one account email now, through Django's configured email backend."""
    body = compose(kind, secret=secret, name=name, workspace_name=workspace_name)
    send_mail(SUBJECTS[kind], body, settings.DEFAULT_FROM_EMAIL, [to], fail_silently=False)
