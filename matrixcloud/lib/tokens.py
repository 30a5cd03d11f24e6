"""Secrets handed to callers once and stored only as hashes.

A token is ``<prefix>_<64 hex>`` from the CSPRNG; the database keeps its SHA-256 hex
digest (unsalted, like the original, docs/COMPATIBILITY.md#c-01: the token itself
carries 256 bits of entropy, so a salt adds nothing and a direct lookup by digest stays
possible). Comparisons of
presented secrets with configured ones are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_secret(prefix: str = "", nbytes: int = 32) -> str:
    body = secrets.token_hex(nbytes)
    return f"{prefix}_{body}" if prefix else body


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secrets_equal(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))
