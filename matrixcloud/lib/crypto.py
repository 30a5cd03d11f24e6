"""Symmetric encryption with the installation's keys (``MATRIXCLOUD_SECRET_KEY``).

``MultiFernet`` over every configured key: the first encrypts, all decrypt, and a wrong
key raises instead of returning ciphertext as if it were the value. A key is 64 hex
characters (32 bytes) as ``serve`` generates, or any passphrase (its SHA-256 is used,
as the original did).
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

__all__ = ["InvalidToken", "decrypt", "encrypt", "key_id"]


def _key_bytes(key: str) -> bytes:
    try:
        raw = bytes.fromhex(key)
        if len(raw) == 32:
            return raw
    except ValueError:
        pass
    return hashlib.sha256(key.encode()).digest()


def key_id(key: str) -> str:
    """A short, non-secret name for a key (stored beside ciphertexts)."""
    return hashlib.sha256(b"matrixcloud-key-id" + _key_bytes(key)).hexdigest()[:12]


@lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(base64.urlsafe_b64encode(_key_bytes(k))) for k in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.MATRIX_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    return _current().decrypt(ciphertext.encode()).decode()
