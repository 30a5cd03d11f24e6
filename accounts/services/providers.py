"""A workspace's provider credentials (bring-your-own keys for Hugging Face, OpenAI, …).

Secrets are encrypted at rest (`matrixcloud.lib.fields.EncryptedTextField`) and never
returned by the API: a credential shows a hint (`credential_hint`). Every write is
audited, and so is every read of a plaintext, which goes through exactly one function,
:func:`provider_secret_read`: Hugging Face calls (purpose ``hf``), sandbox secret
references (``sandbox.env``), agent runs (``agent.run``) all call it.

Who may use a credential: an Owner or Admin always; a Member only when an Owner or Admin
marked it ``usable_by_members`` (off by default), since a Member's sandbox env or agent
run that names it puts the key where the Member can read or spend it. The check runs at
creation (:func:`provider_use_check`, 403 naming the credential) and again when the
secret is read for the job (``provider_secret_read`` for ``Actor.job_creator``, the
creator's role at that moment); each refusal is audited (``provider.credential.refused``).
"""

from __future__ import annotations

import re
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.audit import audit_record
from accounts.choices import AuditStatus, Role
from accounts.models import Membership, ProviderCredential, User, Workspace
from accounts.principals import Actor
from matrixcloud.errors import ApplicationError, BadRequest, Forbidden, NotFound
from matrixcloud.lib.crypto import InvalidToken

DEFAULT_LABEL = "default"
HINT_MASK = "••••"
HINT_MIN_CHARS = 8  # a shorter secret shows only the mask: 4 of 7 characters is too many
MAX_SECRET_CHARS = 16_384
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class SecretUnreadable(ApplicationError):
    """A stored credential that no key of the installation's key ring opens."""

    http_status = 500


class CredentialForbidden(Forbidden):
    """A credential its would-be user may not use (a Member, not marked for members)."""


def credential_hint(secret: str) -> str:
    """``••••`` and the secret's last 4 characters (only the mask for short secrets)."""
    return HINT_MASK + secret[-4:] if len(secret) >= HINT_MIN_CHARS else HINT_MASK


def provider_name(provider: str) -> str:
    """A provider name as stored: trimmed, lowercased, ``[a-z0-9._-]``, 1-64 characters."""
    name = provider.strip().lower()
    if not NAME_PATTERN.fullmatch(name):
        raise BadRequest(
            "provider must be 1-64 characters of a-z, 0-9, '.', '_' or '-' (e.g. huggingface)"
        )
    return name


def provider_label(label: str | None) -> str:
    """A label as stored (default ``default``); no ``/``, so ``provider/label`` parses."""
    value = (label or "").strip() or DEFAULT_LABEL
    if not LABEL_PATTERN.fullmatch(value):
        raise BadRequest("label must be 1-64 characters of letters, digits, '.', '_' or '-'")
    return value


def _secret_checked(secret: str) -> str:
    if not secret.strip():
        raise BadRequest("provider and secret are required")
    if len(secret) > MAX_SECRET_CHARS or "\x00" in secret:
        raise BadRequest(f"secret must be at most {MAX_SECRET_CHARS} characters, without NUL")
    return secret


def provider_upsert(
    *,
    actor: Actor,
    provider: str,
    secret: str,
    label: str | None = DEFAULT_LABEL,
    meta: dict[str, Any] | None = None,
    usable_by_members: bool | None = None,
) -> ProviderCredential:
    """Store a credential of the actor's workspace, replacing the secret, hint and meta
    of the same provider and label; returns the stored row (its real id and creation
    time). ``usable_by_members`` None leaves it as it was (off for a new credential)."""
    if not provider.strip():
        raise BadRequest("provider and secret are required")
    workspace = actor.workspace
    name, label_value, secret = (
        provider_name(provider),
        provider_label(label),
        _secret_checked(secret),
    )
    fields: dict[str, Any] = {"secret": secret, "hint": credential_hint(secret), "meta": meta or {}}
    if usable_by_members is not None:
        fields["usable_by_members"] = usable_by_members
    for _ in range(2):  # a concurrent first store of the same label: update it instead
        try:
            with transaction.atomic():
                credential, created = _upsert_row(workspace, name, label_value, fields, actor.user)
                audit_record(
                    action="provider.credential.added"
                    if created
                    else "provider.credential.updated",
                    actor=actor.id,
                    workspace=workspace,
                    target=name,
                    ip=actor.ip,
                    meta={
                        "label": label_value,
                        "hint": credential.hint,
                        "id": credential.pk,
                        "usable_by_members": credential.usable_by_members,
                    },
                )
                return credential
        except IntegrityError:
            continue
    raise ApplicationError("could not save credential")


def _upsert_row(
    workspace: Workspace, name: str, label: str, fields: dict[str, Any], user: User | None
) -> tuple[ProviderCredential, bool]:
    credential = (
        ProviderCredential.objects.select_for_update()
        .defer("secret")
        .filter(workspace=workspace, provider=name, label=label)
        .first()
    )
    if credential is None:
        credential = ProviderCredential.objects.create(
            workspace=workspace, provider=name, label=label, created_by=user, **fields
        )
        return credential, True
    for key, value in fields.items():
        setattr(credential, key, value)
    credential.updated_at = timezone.now()
    credential.save(update_fields=[*fields, "updated_at"])
    return credential, False


def _credential_locked(workspace: Workspace, credential_id: str) -> ProviderCredential:
    """A credential of ``workspace``, row-locked, secret not loaded (404 otherwise)."""
    credential = (
        ProviderCredential.objects.select_for_update()
        .defer("secret")
        .filter(workspace=workspace, pk=credential_id)
        .first()
    )
    if credential is None:
        raise NotFound("provider credential not found")
    return credential


def provider_delete(*, credential_id: str, actor: Actor) -> None:
    """Remove a credential of the actor's workspace (404 for any other workspace's)."""
    workspace = actor.workspace
    with transaction.atomic():
        credential = _credential_locked(workspace, credential_id)
        credential.delete()
        audit_record(
            action="provider.credential.deleted",
            actor=actor.id,
            workspace=workspace,
            target=credential.provider,
            ip=actor.ip,
            meta={"label": credential.label, "hint": credential.hint, "id": credential_id},
        )


def provider_update(
    *,
    credential_id: str,
    usable_by_members: bool,
    actor: Actor,
) -> ProviderCredential:
    """Mark a credential of the actor's workspace usable by members or not (404 for any
    other workspace's); the secret is left as it is."""
    workspace = actor.workspace
    with transaction.atomic():
        credential = _credential_locked(workspace, credential_id)
        credential.usable_by_members = usable_by_members
        credential.updated_at = timezone.now()
        credential.save(update_fields=["usable_by_members", "updated_at"])
        audit_record(
            action="provider.credential.updated",
            actor=actor.id,
            workspace=workspace,
            target=credential.provider,
            ip=actor.ip,
            meta={
                "label": credential.label,
                "id": credential.pk,
                "usable_by_members": usable_by_members,
            },
        )
    return credential


def _use_refusal(credential: ProviderCredential, actor: Actor) -> str:
    """Why the actor's user may not use ``credential`` now ("" when they may). An actor
    without a user (the operator, the local-dev Owner, the system) may."""
    if actor.user is None:
        return ""
    role = (
        Membership.objects.filter(user=actor.user, workspace_id=credential.workspace_id)
        .values_list("role", flat=True)
        .first()
    )
    name = f"{credential.provider}/{credential.label}"
    if role is None:
        return f"the {name} credential cannot be used: its user is not a member of the workspace"
    if role in Role.managers() or credential.usable_by_members:
        return ""
    return (
        f"the {name} credential is not usable by members: an Owner or Admin can allow it "
        "(usable_by_members on /v1/cloud/providers)"
    )


def _audit_refusal(credential: ProviderCredential, purpose: str, actor: Actor, reason: str) -> None:
    with transaction.atomic():
        audit_record(
            action="provider.credential.refused",
            actor=actor.id,
            workspace=credential.workspace_id,
            target=credential.provider,
            ip=actor.ip,
            status=AuditStatus.FAILURE,
            meta={
                "label": credential.label,
                "purpose": purpose[:64],
                "id": credential.pk,
                "reason": reason[:300],
            },
        )


def provider_use_check(
    *, actor: Actor, provider: str, label: str = DEFAULT_LABEL, purpose: str
) -> None:
    """Refuse, audited, a use of the actor's workspace's credential that the actor's
    user may not make (:class:`CredentialForbidden`, 403 naming it). A credential the
    workspace does not have passes: reading it later fails as unknown. Call it outside
    any transaction that the refusal rolls back, or the audit record goes with it."""
    credential = _credential_row(actor.workspace, provider, label)
    if credential is None:
        return
    reason = _use_refusal(credential, actor)
    if reason:
        _audit_refusal(credential, purpose, actor, reason)
        raise CredentialForbidden(reason)


def _credential_row(workspace: Workspace, provider: str, label: str) -> ProviderCredential | None:
    try:
        name, label_value = provider_name(provider), provider_label(label)
    except BadRequest:
        return None  # a name that cannot be stored is a name the workspace has not stored
    return (
        ProviderCredential.objects.defer("secret")
        .filter(workspace=workspace, provider=name, label=label_value)
        .first()
    )


def provider_secret_read(
    *, actor: Actor, provider: str, label: str = DEFAULT_LABEL, purpose: str
) -> str | None:
    """The plaintext of the actor's workspace's credential, or None when it has none.

    The one way code reads a stored secret. Each read is audited
    (``provider.credential.read``: provider, label, purpose; never the value). A value
    no key of the ring opens raises :class:`SecretUnreadable` (and is audited as a
    failed read); it is never returned as ciphertext. ``actor`` is whom the value is
    read for: a job's creator (:meth:`Actor.job_creator`), whose role now decides
    whether they may (:class:`CredentialForbidden`, audited); :meth:`Actor.system` for
    reads on the workspace's own behalf whose value reaches no user (Hugging Face
    calls) and for jobs of the operator or the local-dev Owner.
    """
    credential = _credential_row(actor.workspace, provider, label)
    if credential is None:
        return None
    refusal = _use_refusal(credential, actor)
    if refusal:  # audited in its own transaction, then refused
        _audit_refusal(credential, purpose, actor, refusal)
        raise CredentialForbidden(refusal)
    failure: InvalidToken | None = None
    with transaction.atomic():
        try:
            secret: str | None = _decrypted_secret(credential)
        except InvalidToken as exc:
            secret, failure = None, exc
        status = AuditStatus.FAILURE if failure else AuditStatus.SUCCESS
        _audit_read(credential, purpose, actor, status)
    if failure is not None:  # raised after the commit, so the failed read stays audited
        raise SecretUnreadable(
            f"the {credential.provider}/{credential.label} credential cannot be decrypted "
            "with this installation's keys (was MATRIXCLOUD_SECRET_KEY or the key file "
            "changed?)"
        ) from failure
    return secret


def _decrypted_secret(credential: ProviderCredential) -> str:
    # A deferred field loads (and so decrypts) on first access.
    return str(credential.secret)


def _audit_read(credential: ProviderCredential, purpose: str, actor: Actor, status: str) -> None:
    audit_record(
        action="provider.credential.read",
        actor=actor.id,
        workspace=credential.workspace_id,
        target=credential.provider,
        status=status,
        meta={"label": credential.label, "purpose": purpose[:64], "id": credential.pk},
    )


def secret_name_parse(name: str) -> tuple[str, str]:
    """A sandbox secret NAME as (provider, label): ``huggingface`` is the provider's
    ``default`` credential, ``openai/work`` its ``work`` one."""
    provider, _, label = name.strip().partition("/")
    return provider, label or DEFAULT_LABEL
