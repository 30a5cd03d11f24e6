"""Account emails: composed here, sent by a background task after the change commits.

The secret link is encrypted before it enters the task queue, so the queue table never
holds a usable token.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction

from matrixcloud.lib.crypto import decrypt, encrypt

SUBJECTS = {
    "verify": "Welcome to MatrixCloud: verify your email",
    "password_reset": "Reset your MatrixCloud password",
    "invite": "You are invited to a MatrixCloud workspace",
}


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


def send_account_email_on_commit(
    kind: str, *, secret: str, user: Any = None, email: str = "", workspace_name: str = ""
) -> None:
    """Queue an account email once the surrounding transaction commits."""
    to = user.email if user is not None else email
    name = getattr(user, "name", "") if user is not None else ""
    sealed = encrypt(secret)

    def enqueue() -> None:
        from django_q.tasks import async_task

        async_task(
            "accounts.tasks.send_account_email",
            kind,
            to,
            name,
            sealed,
            workspace_name,
            task_name=f"email:{kind}",
        )

    transaction.on_commit(enqueue)


def unseal(sealed: str) -> str:
    return decrypt(sealed)
