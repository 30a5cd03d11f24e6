"""The original's at-rest encryption of provider credentials ("secret box").

AES-256-GCM; a stored value is standard base64 of a 12-byte nonce followed by the
sealed data, with no associated data (docs/COMPATIBILITY.md#c-16). The key is resolved as the
original resolved it: a value (its ``MATRIXCLOUD_SECRET_KEY``) that is 32 bytes of hex,
else 32 bytes of base64 in any of Go's four alphabets, else the SHA-256 of the text;
or its key file ``secret.key`` (hex of 32 bytes) beside the SQLite database.

The key is also the source's identity: every original installation has one (it makes
``secret.key`` at first start), nobody who crafts a database without it can compute its
fingerprint, and it stays the same while the original lives on, whatever rows change.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from matrixcloud.importer.errors import ImportFailed

# The original's own variable, and one that names it without clashing with ours.
ORIGINAL_KEY_ENV = "MATRIXCLOUD_ORIGINAL_SECRET_KEY"
SHARED_KEY_ENV = "MATRIXCLOUD_SECRET_KEY"
KEY_FILE_NAME = "secret.key"
NONCE_BYTES = 12
ORIGIN_LABEL = b"matrixcloud import origin v1"


def key_from_value(value: str) -> bytes:
    """The 32-byte key the original derived from its ``MATRIXCLOUD_SECRET_KEY``."""
    text = value.strip()
    try:
        raw = bytes.fromhex(text)
        if len(raw) == 32:
            return raw
    except ValueError:
        pass
    for decode in (_b64_std, _b64_url):
        decoded = decode(text)
        if decoded is not None and len(decoded) == 32:
            return decoded
    return hashlib.sha256(text.encode()).digest()


def _b64_std(text: str) -> bytes | None:
    return _b64(text, altchars=None)


def _b64_url(text: str) -> bytes | None:
    return _b64(text, altchars=b"-_")


def _b64(text: str, altchars: bytes | None) -> bytes | None:
    padded = text + "=" * (-len(text) % 4)  # the padded and the raw alphabet alike
    try:
        return base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class SourceKey:
    """The original's key and where it came from (named in every error about it)."""

    key: bytes
    origin: str

    @property
    def fingerprint(self) -> str:
        """The source's identity in our import ledger: an HMAC of a fixed label under the
        key (hex), which names the key without revealing it."""
        return hmac.new(self.key, ORIGIN_LABEL, hashlib.sha256).hexdigest()

    def open(self, sealed: str) -> str:
        """The plaintext of a stored ``secret_enc``; raises ValueError for a wrong key."""
        try:
            blob = base64.b64decode(sealed, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("not base64") from exc
        if len(blob) <= NONCE_BYTES:
            raise ValueError("too short to be sealed")
        try:
            plain = AESGCM(self.key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], None)
        except InvalidTag as exc:
            raise ValueError("authentication failed") from exc
        return plain.decode("utf-8")


def resolve_key(*, key_file: Path | None, data_dir: Path | None) -> SourceKey | None:
    """The original's key: ``--key-file``, else ``MATRIXCLOUD_ORIGINAL_SECRET_KEY``, else
    ``MATRIXCLOUD_SECRET_KEY`` (the original's own variable), else ``secret.key`` in
    ``data_dir``; None when there is none."""
    if key_file is not None:
        return _key_from_file(key_file, required=True)
    for env in (ORIGINAL_KEY_ENV, SHARED_KEY_ENV):
        value = os.environ.get(env, "").strip()
        if value:
            return SourceKey(key_from_value(value), f"the environment variable {env}")
    if data_dir is not None:
        return _key_from_file(data_dir / KEY_FILE_NAME, required=False)
    return None


def _key_from_file(path: Path, *, required: bool) -> SourceKey | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        if required:
            raise ImportFailed(f"the key file {path} does not exist") from None
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFailed(f"cannot read the key file {path}: {exc}") from exc
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ImportFailed(f"the key file {path} does not hold 64 hex characters (32 bytes)")
    return SourceKey(key, f"the key file {path}")


def missing_key_message(data_dir: Path | None) -> str:
    looked = f" (no {data_dir / KEY_FILE_NAME} either)" if data_dir is not None else ""
    return (
        "the import needs the original's encryption key (it opens the provider "
        "credentials, and it names the source, so that a re-import recognises its own "
        f"rows): set {ORIGINAL_KEY_ENV} to the value of its {SHARED_KEY_ENV}, or pass "
        f"--key-file with its {KEY_FILE_NAME}{looked}"
    )
