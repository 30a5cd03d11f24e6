"""Writes for the runtimes app: join tokens and registered runtimes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.audit import audit_record
from accounts.choices import AuditStatus
from accounts.principals import Actor
from matrixcloud.errors import BadRequest, Unauthorized, UnprocessableEntity
from matrixcloud.lib.sse.activity import activity_notice
from matrixcloud.lib.tokens import new_secret, secret_hash
from runtimes.choices import RuntimeKind, RuntimeStatus
from runtimes.models import JoinToken, Runtime

# --- join tokens and registered runtimes ------------------------------------------
JOIN_TOKEN_PREFIX = "mxrt"  # noqa: S105  (a prefix, not a secret)
# Runtime tokens are bare 64-hex, as the original returned them
# (docs/COMPATIBILITY.md#c-13).
RUNTIME_TOKEN_PREFIX = ""
DEFAULT_TTL = timedelta(hours=24)
MAX_TTL_MINUTES = 30 * 24 * 60
MAX_USES = 1000


@dataclass(frozen=True)
class MintedJoinToken:
    """A new join token and its secret, which exists only in this answer."""

    token: JoinToken
    secret: str


@dataclass(frozen=True)
class IssuedRuntimeToken:
    """A runtime and its (new) runtime token, which exists only in this answer."""

    runtime: Runtime
    token: str


def _ttl(ttl_minutes: int | None) -> timedelta:
    """The join token's lifetime: 0 or None is the default (24 h); 1 min to 30 days."""
    if not ttl_minutes:
        return DEFAULT_TTL
    if ttl_minutes < 0 or ttl_minutes > MAX_TTL_MINUTES:
        raise UnprocessableEntity(
            f"ttl_minutes must be between 1 and {MAX_TTL_MINUTES} (30 days); "
            "0 or absent means 24 hours"
        )
    return timedelta(minutes=ttl_minutes)


def _max_uses(max_uses: int | None) -> int:
    if not max_uses:
        return 1
    if max_uses < 1 or max_uses > MAX_USES:
        raise UnprocessableEntity(f"max_uses must be between 1 and {MAX_USES}")
    return max_uses


def join_token_issue(
    *,
    actor: Actor,
    label: str = "",
    max_uses: int | None = None,
    ttl_minutes: int | None = None,
) -> MintedJoinToken:
    """Mint a join token for the actor's workspace; the secret is returned once, stored
    hashed."""
    workspace = actor.workspace
    uses, ttl = _max_uses(max_uses), _ttl(ttl_minutes)
    secret = new_secret(JOIN_TOKEN_PREFIX)
    now = timezone.now()
    with transaction.atomic():
        token = JoinToken.objects.create(
            workspace=workspace,
            token_hash=secret_hash(secret),
            label=label,
            created_by=actor.user,
            max_uses=uses,
            expires_at=now + ttl,
            created_at=now,
        )
        audit_record(
            action="runtime.join_token.created",
            actor=actor.id,
            workspace=workspace,
            target=token.pk,
            ip=actor.ip,
            meta={"label": label, "max_uses": uses, "expires_at": token.expires_at.isoformat()},
        )
        activity_notice(workspace.pk, "runtimes")
    return MintedJoinToken(token=token, secret=secret)


def join_token_revoke(*, token: JoinToken, actor: Actor) -> JoinToken:
    """Revoke a join token (idempotent: revoking a revoked token changes nothing)."""
    now = timezone.now()
    with transaction.atomic():
        changed = JoinToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=now
        )
        if changed:
            audit_record(
                action="runtime.join_token.revoked",
                actor=actor.id,
                workspace=token.workspace_id,
                target=token.pk,
                ip=actor.ip,
                meta={"label": token.label, "uses": token.uses, "max_uses": token.max_uses},
            )
            activity_notice(token.workspace_id, "runtimes")
    token.refresh_from_db()
    return token


def _refusal(token_hash: str, now: datetime) -> tuple[str, JoinToken | None]:
    """Why a join token could not be redeemed (read after the conditional update failed)."""
    token = JoinToken.objects.filter(token_hash=token_hash).first()
    if token is None:
        return "invalid join token", None
    if token.revoked:
        return "join token revoked", token
    if token.is_expired(now):
        return "join token expired", token
    return "join token already used", token


def _redeem(secret: str, now: datetime) -> JoinToken:
    """Spend one use of a join token with a single conditional UPDATE (joins the caller's
    transaction, so a registration that fails later gives the use back)."""
    token_hash = secret_hash(secret)
    spent = JoinToken.objects.filter(
        token_hash=token_hash,
        revoked_at__isnull=True,
        expires_at__gt=now,
        uses__lt=F("max_uses"),
    ).update(uses=F("uses") + 1)
    if spent != 1:
        raise _Refused(token_hash)
    return JoinToken.objects.get(token_hash=token_hash)


class _Refused(Exception):
    def __init__(self, token_hash: str) -> None:
        self.token_hash = token_hash


def runtime_register(
    *,
    join_token: str,
    name: str = "",
    kind: str = "",
    mode: str = "",
    url: str = "",
    hf_space: str = "",
    region: str = "",
    version: str = "",
    caps: list[str] | None = None,
    resources: dict[str, Any] | None = None,
    ip: str = "",
) -> IssuedRuntimeToken:
    """Register a runtime with a join token: spend one use and create the runtime in one
    transaction. Unknown, revoked, expired or used-up tokens are a 401 (and audited in
    the token's workspace when the token is known)."""
    now = timezone.now()
    token_secret = new_secret(RUNTIME_TOKEN_PREFIX)
    try:
        with transaction.atomic():
            token = _redeem(join_token, now)
            runtime = Runtime.objects.create(
                workspace_id=token.workspace_id,
                join_token=token,
                name=name or hf_space or "",
                kind=kind or RuntimeKind.HF_SPACE,
                mode=mode,
                url=url,
                hf_space=hf_space,
                region=region,
                version=version,
                caps=list(caps or []),
                resources=dict(resources or {}),
                status=RuntimeStatus.ONLINE,
                token_hash=secret_hash(token_secret),
                last_seen_at=now,
                created_at=now,
                updated_at=now,
            )
            if not runtime.name:
                runtime.name = runtime.pk
                runtime.save(update_fields=["name"])
            meta = {"kind": runtime.kind, "hf_space": hf_space, "join_token": token.pk}
            audit_record(
                action="runtime.join_token.redeemed",
                actor=runtime.pk,
                workspace=token.workspace_id,
                target=token.pk,
                ip=ip,
                meta={"uses": token.uses, "max_uses": token.max_uses},
            )
            audit_record(
                action="runtime.registered",
                actor=runtime.pk,
                workspace=token.workspace_id,
                target=runtime.name,
                ip=ip,
                meta=meta,
            )
            activity_notice(token.workspace_id, "runtimes")
    except _Refused as refused:
        message, known = _refusal(refused.token_hash, now)
        if known is not None:
            audit_record(
                action="runtime.join_token.redeemed",
                actor=name or hf_space or "unregistered runtime",
                workspace=known.workspace_id,
                target=known.pk,
                ip=ip,
                status=AuditStatus.FAILURE,
                meta={"reason": message},
            )
        raise Unauthorized(message) from None
    return IssuedRuntimeToken(runtime=runtime, token=token_secret)


def runtime_authenticate(token: str) -> Runtime:
    """The runtime a runtime token belongs to; 401 when unknown or revoked."""
    runtime = Runtime.objects.filter(token_hash=secret_hash(token)).first() if token else None
    if runtime is None:
        raise Unauthorized("invalid runtime token")
    if runtime.token_revoked:
        raise Unauthorized("runtime token revoked")
    return runtime


def runtime_heartbeat(
    *,
    runtime: Runtime,
    status: str = "",
    caps: list[str] | None = None,
    resources: dict[str, Any] | None = None,
    version: str = "",
    ip: str = "",
) -> Runtime:
    """Record a heartbeat of ``runtime`` (from :func:`runtime_authenticate`): status
    (default online), and caps/resources when given.

    A change of the reported status is audited; plain heartbeats are not (one every
    few seconds would drown the log).
    """
    new_status = status or RuntimeStatus.ONLINE
    if new_status not in RuntimeStatus.values:
        raise BadRequest(f"status must be one of: {', '.join(RuntimeStatus.values)}")
    previous = runtime.status
    with transaction.atomic():
        runtime.mark_seen(status=new_status, caps=caps, resources=resources, version=version)
        if previous != new_status:
            audit_record(
                action="runtime.status_changed",
                actor=runtime.pk,
                workspace=runtime.workspace_id,
                target=runtime.pk,
                ip=ip,
                meta={"from": previous, "to": new_status},
            )
            activity_notice(runtime.workspace_id, "runtimes")
    return runtime


def runtime_token_rotate(*, runtime: Runtime, actor: Actor) -> IssuedRuntimeToken:
    """Give the runtime a new token (shown once); the old one stops working at once.

    Rotating also lifts a revocation: it is how a workspace re-admits a runtime.
    """
    token_secret = new_secret(RUNTIME_TOKEN_PREFIX)
    now = timezone.now()
    with transaction.atomic():
        Runtime.objects.filter(pk=runtime.pk).update(
            token_hash=secret_hash(token_secret),
            token_rotated_at=now,
            token_revoked_at=None,
            updated_at=now,
        )
        audit_record(
            action="runtime.token.rotated",
            actor=actor.id,
            workspace=runtime.workspace_id,
            target=runtime.pk,
            ip=actor.ip,
            meta={"name": runtime.name, "was_revoked": runtime.token_revoked},
        )
        activity_notice(runtime.workspace_id, "runtimes")
    runtime.refresh_from_db()
    return IssuedRuntimeToken(runtime=runtime, token=token_secret)


def runtime_token_revoke(*, runtime: Runtime, actor: Actor) -> Runtime:
    """Revoke the runtime's token: its heartbeats are refused (401) until a rotation."""
    now = timezone.now()
    with transaction.atomic():
        changed = Runtime.objects.filter(pk=runtime.pk, token_revoked_at__isnull=True).update(
            token_revoked_at=now, updated_at=now
        )
        if changed:
            audit_record(
                action="runtime.token.revoked",
                actor=actor.id,
                workspace=runtime.workspace_id,
                target=runtime.pk,
                ip=actor.ip,
                meta={"name": runtime.name},
            )
            activity_notice(runtime.workspace_id, "runtimes")
    runtime.refresh_from_db()
    return runtime


def runtime_remove(*, runtime: Runtime, actor: Actor) -> None:
    """Remove a registered runtime; its token dies with it."""
    with transaction.atomic():
        deleted, _ = Runtime.objects.filter(pk=runtime.pk).delete()
        if deleted:
            audit_record(
                action="runtime.removed",
                actor=actor.id,
                workspace=runtime.workspace_id,
                target=runtime.pk,
                ip=actor.ip,
                meta={"name": runtime.name, "kind": runtime.kind},
            )
            activity_notice(runtime.workspace_id, "runtimes")
