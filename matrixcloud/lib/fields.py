"""Model fields shared by the apps.

:class:`EncryptedTextField` keeps text encrypted at rest with the installation's key
ring (`matrixcloud.lib.crypto`): the column holds ``mxe1:<key id>:<token>``, the model
attribute the plaintext. A value no key of the ring opens raises on load; it is never
handed out as if the ciphertext were the value. ``manage.py rotate_secret_key`` finds
every such field through :func:`encrypted_fields` and re-encrypts its rows.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db import models

from matrixcloud.lib import crypto


class EncryptedTextField(models.TextField):
    """Text encrypted at rest; lookups on it are meaningless (every write differs)."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        return None if value is None else crypto.decrypt(value)

    def get_prep_value(self, value: Any) -> str | None:
        value = super().get_prep_value(value)
        return None if value is None else crypto.encrypt(str(value))


def encrypted_fields() -> list[tuple[type[models.Model], EncryptedTextField]]:
    """Every (model, field) of the project that stores encrypted text."""
    return [
        (model, field)
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if isinstance(field, EncryptedTextField)
    ]
