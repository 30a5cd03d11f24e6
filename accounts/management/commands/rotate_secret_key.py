"""``manage.py rotate_secret_key``: a new primary encryption key, every secret re-encrypted.

Without downtime: the new key is put first in the key file (the older keys stay, so
every value stays readable), and running servers pick the file up on their next
encryption or decryption (`matrixcloud.lib.crypto` re-reads it when it changes). Then
each encrypted column of every model (`matrixcloud.lib.fields.encrypted_fields`) is
re-encrypted in batches, one short transaction per row, each a conditional update
(a value rewritten meanwhile is left as its writer stored it). ``--retire-old`` then
drops the older keys from the file, but only once no value still needs them; the audit
chain's keys derived from them are kept (``accounts.audit``), so its old rows verify.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models, transaction
from django.db.models.functions import Cast
from django.db.models.lookups import Exact

from accounts.audit import PURPOSE as AUDIT_PURPOSE
from matrixcloud.lib import crypto
from matrixcloud.lib.fields import EncryptedTextField, encrypted_fields
from matrixcloud.lib.keyfile import write_keys

RAW = "_raw_ciphertext"


@dataclass
class Tally:
    """What a pass over the encrypted columns found and did."""

    rotated: int = 0
    current: int = 0
    unreadable: list[str] = field(default_factory=list)


def _raw_values(
    model: type[models.Model], column: EncryptedTextField, after: Any, batch: int
) -> list[tuple[Any, str]]:
    """The next ``batch`` (pk, ciphertext) pairs: the column as stored, not decrypted."""
    rows = (
        model._default_manager.annotate(**{RAW: Cast(column.name, models.TextField())})
        .filter(**{f"{column.name}__isnull": False})
        .order_by("pk")
    )
    if after is not None:
        rows = rows.filter(pk__gt=after)
    return list(rows.values_list("pk", RAW)[:batch])


def _reencrypt_one(
    model: type[models.Model], column: EncryptedTextField, pk: Any, raw: str
) -> bool:
    plaintext = crypto.decrypt(raw)
    unchanged = Exact(Cast(column.name, models.TextField()), raw)
    with transaction.atomic():
        updated = model._default_manager.filter(unchanged, pk=pk).update(**{column.name: plaintext})
    return updated == 1


class Command(BaseCommand):
    """Rotate the encryption key ring and re-encrypt every stored secret."""

    help = (
        "Generate a new primary encryption key (older keys stay readable), re-encrypt "
        "every encrypted value under it in batches, and with --retire-old drop the older "
        "keys once nothing needs them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--retire-old",
            action="store_true",
            help="After re-encrypting, remove every older key from the key file "
            "(refused while any value still needs one).",
        )
        parser.add_argument(
            "--reencrypt-only",
            action="store_true",
            help="Generate no key: re-encrypt under the current primary key (after you put "
            "a new key first in MATRIXCLOUD_SECRET_KEY and restarted).",
        )
        parser.add_argument("--batch", type=int, default=500, help="Rows read per query.")

    def handle(self, *args: Any, **options: Any) -> None:
        keyfile = settings.MATRIX_ENCRYPTION_KEYFILE
        if not options["reencrypt_only"]:
            if keyfile is None:
                raise CommandError(
                    "the key ring comes from MATRIXCLOUD_SECRET_KEY, which this command cannot "
                    "change: put a new 64-hex key first (new,old), restart the servers, then "
                    "run rotate_secret_key --reencrypt-only"
                )
            self._add_primary(Path(keyfile))
        primary = crypto.key_ring().primary_id
        tally = self._reencrypt(primary, max(1, options["batch"]))
        self.stdout.write(
            f"re-encrypted {tally.rotated} values under key {primary}; "
            f"{tally.current} already used it"
        )
        if tally.unreadable:
            raise CommandError(
                f"{len(tally.unreadable)} values cannot be decrypted with any key of the ring "
                f"(left as they are): {', '.join(tally.unreadable[:20])}"
            )
        if options["retire_old"]:
            self._retire(keyfile, primary, max(1, options["batch"]))

    def _add_primary(self, keyfile: Path) -> None:
        keys = crypto.parse_keys(keyfile.read_text(encoding="ascii"))
        new_key = secrets.token_hex(32)
        write_keys(keyfile, [new_key, *keys])
        self.stdout.write(
            f"new primary key {crypto.key_id(new_key)} in {keyfile}; "
            f"{len(keys)} older key(s) stay readable"
        )

    def _reencrypt(self, primary: str, batch: int) -> Tally:
        tally = Tally()
        for model, column in encrypted_fields():
            after: Any = None
            while rows := _raw_values(model, column, after, batch):
                for pk, raw in rows:
                    self._reencrypt_row(model, column, pk, raw, primary, tally)
                after = rows[-1][0]
        return tally

    def _reencrypt_row(
        self,
        model: type[models.Model],
        column: EncryptedTextField,
        pk: Any,
        raw: str,
        primary: str,
        tally: Tally,
    ) -> None:
        try:
            if crypto.ciphertext_key_id(raw) == primary:
                tally.current += 1
            elif _reencrypt_one(model, column, pk, raw):
                tally.rotated += 1
            else:
                tally.current += 1  # rewritten meanwhile, by a writer using the new ring
        except crypto.InvalidToken:
            tally.unreadable.append(f"{model._meta.label}:{pk}.{column.name}")

    def _retire(self, keyfile: Path | None, primary: str, batch: int) -> None:
        if keyfile is None:
            raise CommandError(
                "the key ring comes from MATRIXCLOUD_SECRET_KEY: remove the older keys there"
            )
        stale = [
            f"{model._meta.label}:{pk}"
            for model, column in encrypted_fields()
            for pk, raw in _all_raw_values(model, column, batch)
            if crypto.ciphertext_key_id(raw) != primary
        ]
        if stale:
            raise CommandError(
                f"not retiring the older keys: {len(stale)} values still use them "
                f"({', '.join(stale[:20])}); run rotate_secret_key --reencrypt-only first"
            )
        retired = [kid for kid in crypto.key_ring().ids if kid != primary]
        # The audit rows these keys signed must still verify: keep their (one-way) audit key.
        crypto.keep_derived_keys(retired, AUDIT_PURPOSE)
        keys = crypto.parse_keys(Path(keyfile).read_text(encoding="ascii"))
        write_keys(Path(keyfile), [key for key in keys if crypto.key_id(key) == primary])
        self.stdout.write(f"retired {len(retired)} older key(s): {', '.join(retired) or 'none'}")


def _all_raw_values(
    model: type[models.Model], column: EncryptedTextField, batch: int
) -> list[tuple[Any, str]]:
    found: list[tuple[Any, str]] = []
    after: Any = None
    while rows := _raw_values(model, column, after, batch):
        found.extend(rows)
        after = rows[-1][0]
    return found
