"""The audit log: append a keyed, hash-chained record; verify the chain.

Every service that audits calls ``audit_record`` inside its own transaction, so the
record and the change it describes commit together. Appends are serialised by locking
the single ``AuditChainHead`` row.

Each row's ``hash`` is an HMAC-SHA256 over the previous row's hash and this row's
canonical content, keyed with a key derived from the installation's key ring (the key's
id is stored on the row, ``hash_key``). Someone with write access to the database but
not to the key ring can edit a row, but cannot compute the hash it must then have:
re-hashing the chain the old way (plain SHA-256) is caught at the first edited row.

Rows written before the chain was keyed (``hash_key`` empty) keep their plain SHA-256
hash. The upgrade's migration sealed how many of them there are: the head carries
``legacy_count`` and a MAC over (count, last hash, legacy count), updated on every
append. So an unkeyed row after the first ``legacy_count`` rows is a forgery, and so is
a head whose MAC does not hold (its tail cut off, or the legacy count raised to pass
off forged unkeyed rows). An edit inside the unkeyed rows cannot be pinned to one row
(they have no key); it shows at the first keyed row, whose MAC covers the last unkeyed
row's hash, or at the head while no keyed row exists yet.

Key rotation: new rows use the ring's primary key; every row names its key, so older
rows verify with the key that signed them while it stays in the ring. When
``rotate_secret_key --retire-old`` retires a key, the audit key derived from it is kept
(``crypto.keep_derived_keys``: it signs and verifies, but decrypts nothing), so the
rows it signed still verify.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.choices import AuditStatus
from accounts.models import AuditChainHead, AuditEvent, Workspace
from matrixcloud.lib import crypto

GENESIS = "0" * 64
PURPOSE = "audit chain"


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


def legacy_hash(prev_hash: str, event: AuditEvent) -> str:
    """The unkeyed hash of rows written before the chain was keyed (``hash_key`` empty)."""
    return hashlib.sha256(f"{prev_hash}\n{_canonical(event)}".encode()).hexdigest()


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    """The hash ``event`` must have after ``prev_hash``: keyed with the key it names
    (``KeyUnavailable`` when that key is gone), unkeyed for a legacy row."""
    if not event.hash_key:
        return legacy_hash(prev_hash, event)
    key = crypto.derived_key(event.hash_key, PURPOSE)
    message = f"{prev_hash}\n{_canonical(event)}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _head_message(count: int, last_hash: str, legacy_count: int) -> bytes:
    return f"head\n{count}\n{last_hash}\n{legacy_count}".encode()


def head_seal(count: int, last_hash: str, legacy_count: int) -> str:
    """The head's MAC under the primary key, as ``<key id>:<hex>``."""
    kid = crypto.key_ring().primary_id
    key = crypto.derived_key(kid, PURPOSE)
    mac = hmac.new(key, _head_message(count, last_hash, legacy_count), hashlib.sha256)
    return f"{kid}:{mac.hexdigest()}"


def head_seal_holds(head: AuditChainHead) -> bool:
    kid, _, mac = head.seal.partition(":")
    if not kid or not mac:
        return False
    try:
        key = crypto.derived_key(kid, PURPOSE)
    except crypto.KeyUnavailable:
        return False
    message = _head_message(head.count, head.last_hash, head.legacy_count)
    return hmac.compare_digest(mac, hmac.new(key, message, hashlib.sha256).hexdigest())


def chain_link(head: AuditChainHead, events: list[AuditEvent]) -> str:
    """Give ``events`` (unsaved, in order) their place after ``head``: previous hash,
    key id, hash. Returns the new last hash; the caller holds the head's lock."""
    previous, kid = head.last_hash, crypto.key_ring().primary_id
    for event in events:
        event.prev_hash, event.hash_key = previous, kid
        event.hash = previous = chain_hash(previous, event)
    return previous


def chain_advance(head: AuditChainHead, last_hash: str, added: int) -> None:
    """Move the (locked) head past ``added`` new rows ending in ``last_hash``; re-seal it."""
    count = head.count + added
    AuditChainHead.objects.filter(pk=1).update(
        last_hash=last_hash, count=count, seal=head_seal(count, last_hash, head.legacy_count)
    )


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
    record = AuditEntry(action, actor, workspace, target, ip, status, meta)
    return audit_record_many([record])[0]


@dataclass(frozen=True)
class AuditEntry:
    """One record for :func:`audit_record_many` (the arguments of :func:`audit_record`)."""

    action: str
    actor: str
    workspace: Workspace | str | None = None
    target: str = ""
    ip: str = ""
    status: str = AuditStatus.SUCCESS
    meta: dict[str, Any] | None = None

    def event(self) -> AuditEvent:
        workspace = self.workspace
        return AuditEvent(
            workspace_id=workspace.pk if isinstance(workspace, Workspace) else (workspace or None),
            actor=self.actor[:254],
            action=self.action,
            target=self.target[:300],
            ip=self.ip[:64],
            status=self.status,
            meta=self.meta or {},
            created_at=timezone.now(),
        )


def audit_record_many(records: list[AuditEntry]) -> list[AuditEvent]:
    """Append ``records`` to the chain in their order: one lock of the head, one insert
    (a sandbox host's batch of tool calls). Joins the caller's transaction."""
    if not records:
        return []
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
        events = [record.event() for record in records]
        last_hash = chain_link(head, events)
        if len(events) == 1:
            events[0].save(force_insert=True)
        else:
            AuditEvent.objects.bulk_create(events)  # seq follows the list's order
        chain_advance(head, last_hash, len(events))
    return events


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


def _row_problem(prev: str, event: AuditEvent, *, may_be_unkeyed: bool) -> str:
    """Why ``event`` does not hold after ``prev`` ("" when it does)."""
    if event.prev_hash != prev:
        return "previous hash does not match (row removed?)"
    if not event.hash_key and not may_be_unkeyed:
        return "row is not keyed, but the chain was keyed before it (re-hashed without the key?)"
    try:
        expected = chain_hash(prev, event)
    except crypto.KeyUnavailable:
        return (
            f"signed with key {event.hash_key}, which this installation does not have "
            "(a key retired without keeping its audit key?)"
        )
    if not hmac.compare_digest(expected, event.hash):
        return "content does not match its hash (row edited?)"
    return ""


def audit_verify(batch: int = 2000) -> ChainReport:
    """Walk the whole chain in order; report the first row whose hash does not hold,
    then check the head (its count, last hash and seal)."""
    head = AuditChainHead.objects.filter(pk=1).first()
    # A head whose seal holds says exactly how many rows may be unkeyed. One whose seal
    # does not is reported below; meanwhile unkeyed rows pass only before the first
    # keyed one, so a forgery after keyed rows is still named by its row.
    sealed = head is not None and head_seal_holds(head)
    legacy_count = head.legacy_count if head is not None and sealed else None
    prev, checked, keyed_seen = GENESIS, 0, False
    for event in AuditEvent.objects.order_by("seq").iterator(chunk_size=batch):
        unkeyed_ok = checked < legacy_count if legacy_count is not None else not keyed_seen
        problem = _row_problem(prev, event, may_be_unkeyed=unkeyed_ok)
        if problem:
            return ChainReport(checked, event.seq, problem, event.id)
        prev, checked, keyed_seen = event.hash, checked + 1, keyed_seen or bool(event.hash_key)
    return _head_report(head, prev, checked)


def _head_report(head: AuditChainHead | None, prev: str, checked: int) -> ChainReport:
    # -1: no single row is wrong; the head or the newest rows are.
    if head is None:
        if checked:
            return ChainReport(checked, -1, "the chain head is missing (removed?)")
        return ChainReport(0, None, "ok")
    if head.last_hash != prev or head.count != checked:
        return ChainReport(checked, -1, "chain head disagrees with the rows (tail removed?)")
    if checked and not head_seal_holds(head):
        return ChainReport(checked, -1, "the chain head's seal does not hold (head edited?)")
    return ChainReport(checked, None, "ok")
