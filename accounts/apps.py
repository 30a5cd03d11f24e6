"""Accounts: users, workspaces, sessions, credentials, audit and usage."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Accounts: users, workspaces, sessions, credentials, audit and usage."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from accounts import signals

        signals.connect()
