"""Reads the original Go server's password hashes so imported users can sign in.

The original stored ``pbkdf2$<iterations>$<salt hex>$<key hex>`` (PBKDF2-HMAC-SHA256;
docs/COMPATIBILITY.md#c-07).
Django finds this hasher by the ``pbkdf2`` prefix; because it is not the preferred
hasher, a successful login re-hashes the password with Argon2id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from django.contrib.auth.hashers import BasePasswordHasher, mask_hash

# The original wrote 120,000; far more would make every login a denial of service
# (docs/COMPATIBILITY.md#f-11).
MAX_ITERATIONS = 2_000_000


class GoPBKDF2PasswordHasher(BasePasswordHasher):
    """``pbkdf2$iter$salthex$keyhex`` from matrix-runtime; verify only, then upgrade."""

    algorithm = "pbkdf2"
    iterations = 120_000

    def salt(self) -> str:
        return secrets.token_hex(16)

    def encode(self, password: str, salt: str, iterations: int | None = None) -> str:
        rounds = iterations or self.iterations
        key = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), rounds, 32)
        return f"{self.algorithm}${rounds}${salt}${key.hex()}"

    def decode(self, encoded: str) -> dict[str, Any]:
        algorithm, iterations, salt, key = encoded.split("$", 3)
        if algorithm != self.algorithm:
            raise ValueError("not a matrix-runtime pbkdf2 hash")
        return {"algorithm": algorithm, "iterations": int(iterations), "salt": salt, "hash": key}

    def verify(self, password: str, encoded: str) -> bool:
        try:
            parts = self.decode(encoded)
            salt = bytes.fromhex(parts["salt"])
            expected = bytes.fromhex(parts["hash"])
        except ValueError:
            return False
        if not 1 <= parts["iterations"] <= MAX_ITERATIONS or not 16 <= len(expected) <= 64:
            # Unusable (or a CPU bomb planted in an imported row): a wrong password.
            return False
        derived = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), salt, parts["iterations"], len(expected)
        )
        return hmac.compare_digest(derived, expected)

    def safe_summary(self, encoded: str) -> dict[Any, Any]:
        parts = self.decode(encoded)
        return {
            "algorithm": parts["algorithm"],
            "iterations": parts["iterations"],
            "salt": mask_hash(parts["salt"]),
            "hash": mask_hash(parts["hash"]),
        }

    def must_update(self, encoded: str) -> bool:
        return True

    def harden_runtime(self, password: str, encoded: str) -> None:
        return None
