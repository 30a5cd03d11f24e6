"""``manage.py audit_verify``: prove the audit log's hash chain is intact."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts.audit import audit_verify


class Command(BaseCommand):
    """Walk every audit row in order; exit non-zero at the first broken link."""

    help = "Verify the hash chain of the audit log."

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_verify()
        if not report.ok:
            where = (
                "the newest rows"
                if report.broken_seq == -1
                else f"row {report.broken_id} (seq {report.broken_seq})"
            )
            raise CommandError(
                f"audit chain broken at {where} after {report.checked} good rows: {report.reason}"
            )
        self.stdout.write(f"audit chain intact: {report.checked} events")
