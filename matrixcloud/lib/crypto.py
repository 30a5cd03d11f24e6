"""Symmetric encryption with the installation's key ring (``MATRIXCLOUD_SECRET_KEY``).

A ciphertext is ``mxe1:<key id>:<Fernet token>``: the key id names the key that
encrypted it, so a value is decrypted by exactly that key and a wrong or missing key
raises (:class:`InvalidToken`, or :class:`KeyUnavailable` for an id not in the ring)
instead of returning ciphertext as if it were the value. The first key of the ring
encrypts; every key decrypts. A key is 64 hex characters (32 bytes) as ``serve``
generates, or any passphrase (its SHA-256 is used, as the original did: docs/COMPATIBILITY.md#c-06).

Where the ring lives: ``MATRIXCLOUD_SECRET_KEY`` (comma-separated, fixed for the life of
a process) or, when that is unset, the key file ``<data>/secret.key``
(``settings.MATRIX_ENCRYPTION_KEYFILE``, comma-separated on one line). The key file is
re-read whenever it changes on disk, so ``manage.py rotate_secret_key`` can put a new
primary key in it while servers run: they encrypt with it and decrypt what it wrote
from then on, without a restart.

Keys for other purposes (the audit chain's MAC) are derived from a ring key, one-way
(:func:`derived_key`), so they can be kept after the ring key is retired
(:func:`keep_derived_keys`, into ``settings.MATRIX_DERIVED_KEYFILE``) without keeping
anything that decrypts: records a retired key signed still verify.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from matrixcloud.lib.keyfile import write_private_file

__all__ = [
    "InvalidToken",
    "KeyRing",
    "KeyUnavailable",
    "ciphertext_key_id",
    "decrypt",
    "derived_key",
    "encrypt",
    "keep_derived_keys",
    "key_id",
    "key_ring",
    "parse_keys",
]

PREFIX = "mxe1"


class KeyUnavailable(InvalidToken):
    """A ciphertext names a key id that is not in the installation's key ring."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"no key with id {kid} in the key ring")
        self.kid = kid


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


def parse_keys(text: str) -> list[str]:
    """The keys of a ring written as ``primary,older,…`` (blanks ignored)."""
    return [key.strip() for key in text.split(",") if key.strip()]


@dataclass(frozen=True)
class KeyRing:
    """The keys in use: ``primary_id`` encrypts, every id in ``by_id`` decrypts."""

    primary_id: str
    ids: tuple[str, ...]
    by_id: dict[str, Fernet]
    legacy: MultiFernet  # for tokens written without a key id
    raw_by_id: dict[str, bytes]  # the key bytes, for derived keys only

    def encrypt(self, plaintext: str) -> str:
        token = self.by_id[self.primary_id].encrypt(plaintext.encode()).decode()
        return f"{PREFIX}:{self.primary_id}:{token}"

    def decrypt(self, ciphertext: str) -> str:
        kid, token = _split(ciphertext)
        if kid is None:
            return self.legacy.decrypt(token.encode()).decode()
        fernet = self.by_id.get(kid)
        if fernet is None:
            raise KeyUnavailable(kid)
        return fernet.decrypt(token.encode()).decode()


@lru_cache(maxsize=16)
def _ring_for(keys: tuple[str, ...]) -> KeyRing:
    if not keys:
        raise ImproperlyConfigured("the encryption key ring is empty")
    raw = [_key_bytes(key) for key in keys]
    fernets = [Fernet(base64.urlsafe_b64encode(key)) for key in raw]
    ids = tuple(key_id(key) for key in keys)
    return KeyRing(
        primary_id=ids[0],
        ids=ids,
        by_id=dict(zip(ids, fernets, strict=True)),
        legacy=MultiFernet(fernets),
        raw_by_id=dict(zip(ids, raw, strict=True)),
    )


@lru_cache(maxsize=4)
def _file_keys(path: str, signature: tuple[int, int, int]) -> tuple[str, ...]:
    del signature  # part of the cache key only: a changed file is read again
    return tuple(parse_keys(Path(path).read_text(encoding="ascii")))


def key_ring() -> KeyRing:
    """The current ring: the key file's (as it is on disk now) or the configured one."""
    keyfile = getattr(settings, "MATRIX_ENCRYPTION_KEYFILE", None)
    if keyfile:
        try:
            stat = os.stat(keyfile)
            keys = _file_keys(str(keyfile), (stat.st_mtime_ns, stat.st_size, stat.st_ino))
        except OSError as exc:
            raise ImproperlyConfigured(f"cannot read the key file {keyfile}: {exc}") from exc
        return _ring_for(keys)
    return _ring_for(tuple(settings.MATRIX_ENCRYPTION_KEYS))


def _split(ciphertext: str) -> tuple[str | None, str]:
    if ciphertext.startswith(PREFIX + ":"):
        parts = ciphertext.split(":", 2)
        if len(parts) != 3:
            raise InvalidToken
        return parts[1], parts[2]
    return None, ciphertext


def ciphertext_key_id(ciphertext: str) -> str | None:
    """The id of the key that wrote ``ciphertext`` (None for a token without one)."""
    return _split(ciphertext)[0]


def encrypt(plaintext: str) -> str:
    return key_ring().encrypt(plaintext)


def decrypt(ciphertext: str) -> str:
    """The plaintext; raises :class:`InvalidToken` when no key of the ring opens it."""
    return key_ring().decrypt(ciphertext)


def _derive(raw: bytes, purpose: str) -> bytes:
    return hmac.new(raw, f"matrixcloud derived key: {purpose}".encode(), hashlib.sha256).digest()


def _kept_derived_keys() -> dict[tuple[str, str], bytes]:
    """(purpose, key id) -> derived key, from the kept-keys file (empty when there is none).

    One line per key: ``<key id> <hex derived key> <purpose>``.
    """
    path = getattr(settings, "MATRIX_DERIVED_KEYFILE", None)
    try:
        text = Path(path).read_text(encoding="ascii") if path else ""
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot read the kept derived keys at {path}: {exc}") from exc
    kept: dict[tuple[str, str], bytes] = {}
    for line in text.splitlines():
        kid, key, purpose = [*line.split(" ", 2), "", ""][:3]
        if kid and key and purpose:
            kept[(purpose, kid)] = bytes.fromhex(key)
    return kept


def derived_key(kid: str, purpose: str) -> bytes:
    """The key for ``purpose`` derived from the ring's key ``kid`` (HMAC-SHA256 of the
    purpose under it: it reveals nothing of the ring key), or the one kept for ``kid``
    when the ring key was retired. Raises :class:`KeyUnavailable` when neither exists."""
    raw = key_ring().raw_by_id.get(kid)
    if raw is not None:
        return _derive(raw, purpose)
    kept = _kept_derived_keys().get((purpose, kid))
    if kept is None:
        raise KeyUnavailable(kid)
    return kept


def keep_derived_keys(kids: list[str], purpose: str) -> None:
    """Keep the ``purpose`` keys derived from the ring keys ``kids`` (about to be retired)
    in ``settings.MATRIX_DERIVED_KEYFILE`` (0600), so what they signed still verifies."""
    path = settings.MATRIX_DERIVED_KEYFILE
    ring = key_ring()
    kept = _kept_derived_keys()
    for kid in kids:
        kept[(purpose, kid)] = _derive(ring.raw_by_id[kid], purpose)
    lines = [f"{kid} {key.hex()} {what}" for (what, kid), key in sorted(kept.items())]
    write_private_file(Path(path), "\n".join(lines) + "\n")
