"""Background tasks of the accounts app (run by the django-q2 worker)."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import send_mail

from accounts.emails import SUBJECTS, compose, unseal


def password_reset_deliver(email: str, ip: str) -> None:
    """Make and mail a reset link if ``email`` has an account (queued by forgot)."""
    from accounts.services.passwords import password_reset_issue

    password_reset_issue(email=email, ip=ip)


def send_account_email(kind: str, to: str, name: str, sealed: str, workspace_name: str) -> None:
    """Send one account email through Django's configured email backend."""
    body = compose(kind, secret=unseal(sealed), name=name, workspace_name=workspace_name)
    send_mail(SUBJECTS[kind], body, settings.DEFAULT_FROM_EMAIL, [to], fail_silently=False)
