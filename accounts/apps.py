"""Accounts: users, workspaces, sessions, credentials, audit and usage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.apps import AppConfig

if TYPE_CHECKING:
    from matrixcloud.lib.pruning import Retention


class AccountsConfig(AppConfig):
    """Accounts: users, workspaces, sessions, credentials, audit and usage."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from accounts import signals

        signals.connect()

    def prune(self, retention: Retention) -> dict[str, int]:
        """``manage.py prune`` for this app (see ``accounts.pruning``)."""
        from accounts.pruning import accounts_prune

        return accounts_prune(retention)

    def sweep(self) -> None:
        """The worker's periodic sweep for this app: send the email outbox."""
        from accounts.outbox import outbox_deliver

        outbox_deliver()
