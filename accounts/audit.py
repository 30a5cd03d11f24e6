"""The audit log: append a hash-chained record; verify the chain.

Every service that audits calls ``audit_record`` inside its own transaction, so the
record and the change it describes commit together. Appends are serialised by locking
the single ``AuditChainHead`` row; each row's hash covers the previous hash and this
row's canonical content.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.choices import AuditStatus
from accounts.models import AuditChainHead, AuditEvent, Workspace

GENESIS = "0" * 64


def _canonical(event: AuditEvent) -> str:
    return json.dumps(
        {
            "id": event.id,
            "workspace_id": event.workspace_id or "",
            "actor": event.actor,
            "action": event.action,
            "target": event.target,
            "ip": event.ip,
            "status": event.status,
            "meta": event.meta,
            "created_at": event.created_at.isoformat(),
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    return hashlib.sha256(f"{prev_hash}\n{_canonical(event)}".encode()).hexdigest()


def audit_record(
    *,
    action: str,
    actor: str,
    workspace: Workspace | str | None = None,
    target: str = "",
    ip: str = "",
    status: str = AuditStatus.SUCCESS,
    meta: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit record to the chain (joins the caller's transaction)."""
    workspace_id = workspace.pk if isinstance(workspace, Workspace) else (workspace or None)
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
        event = AuditEvent(
            workspace_id=workspace_id,
            actor=actor[:254],
            action=action,
            target=target[:300],
            ip=ip[:64],
            status=status,
            meta=meta or {},
            created_at=timezone.now(),
            prev_hash=head.last_hash,
        )
        event.hash = chain_hash(head.last_hash, event)
        event.save(force_insert=True)
        AuditChainHead.objects.filter(pk=1).update(last_hash=event.hash, count=head.count + 1)
    return event


@dataclass(frozen=True)
class ChainReport:
    """What ``audit_verify`` found: rows checked and the first broken row, if any."""

    checked: int
    broken_seq: int | None
    reason: str
    broken_id: str = ""  # the broken row's public id (au_…), when a row is to blame

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


def audit_verify(batch: int = 2000) -> ChainReport:
    """Walk the whole chain in order; report the first row whose hash does not hold."""
    prev = GENESIS
    checked = 0
    for event in AuditEvent.objects.order_by("seq").iterator(chunk_size=batch):
        if event.prev_hash != prev:
            return ChainReport(
                checked, event.seq, "previous hash does not match (row removed?)", event.id
            )
        if chain_hash(prev, event) != event.hash:
            return ChainReport(
                checked, event.seq, "content does not match its hash (row edited?)", event.id
            )
        prev = event.hash
        checked += 1
    head = AuditChainHead.objects.filter(pk=1).first()
    if head is not None and (head.last_hash != prev or head.count != checked):
        # -1: no single row is wrong; the newest rows are missing.
        return ChainReport(checked, -1, "chain head disagrees with the rows (tail removed?)")
    return ChainReport(checked, None, "ok")
