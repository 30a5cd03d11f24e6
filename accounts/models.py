"""Accounts: people, workspaces, memberships, sessions, one-time tokens, the audit log,
provider credentials and usage events."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from accounts.choices import AuditStatus, Role, UsageKind
from accounts.managers import UserManager
from matrixcloud.lib.fields import EncryptedTextField
from matrixcloud.lib.ids import (
    new_audit_event_id,
    new_id,
    new_provider_credential_id,
    new_usage_event_id,
    new_user_id,
    new_workspace_id,
)


def new_session_id() -> str:
    return new_id("ses")


def new_password_reset_id() -> str:
    return new_id("pr")


def new_email_verification_id() -> str:
    return new_id("ev")


def new_invitation_id() -> str:
    return new_id("inv")


class User(AbstractBaseUser, PermissionsMixin):
    """A person who signs in with an email address.

    Operators (Django admin users) are users with ``is_staff``. What a user may do in a
    workspace is their ``Membership`` role there. The public id keeps the original's
    ``usr_`` format (docs/COMPATIBILITY.md#c-01); the email is stored lowercased and unique
    case-insensitively.
    """

    id = models.CharField(primary_key=True, max_length=32, default=new_user_id, editable=False)
    email = models.EmailField(max_length=254, unique=True)
    name = models.CharField(max_length=200, blank=True)
    email_verified_at = models.DateTimeField(null=True, blank=True)
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = []

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower("email"), name="accounts_user_email_ci_unique"),
        ]

    def __str__(self) -> str:
        return self.email


class Workspace(models.Model):
    """A tenant: everything a user creates belongs to exactly one workspace."""

    id = models.CharField(primary_key=True, max_length=32, default=new_workspace_id, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=120, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"


class Membership(models.Model):
    """A user's role in a workspace (Owner, Admin or Member)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "workspace"], name="accounts_membership_once"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.workspace_id} as {self.role}"

    @property
    def can_manage(self) -> bool:
        return self.role in Role.managers()


# How stale a session's last use may be before a use is written again.
SESSION_TOUCH_EVERY = timedelta(seconds=60)


class SessionTokenQuerySet(models.QuerySet["SessionToken"]):
    def usable(self, now: datetime) -> SessionTokenQuerySet:
        return self.filter(revoked_at__isnull=True, expires_at__gt=now, idle_expires_at__gt=now)


class SessionToken(models.Model):
    """A bearer session: only the SHA-256 of the token is stored.

    It ends at ``expires_at`` (absolute), at ``idle_expires_at`` (pushed forward as it
    is used), or when revoked (logout, logout-all, password reset, admin).
    """

    id = models.CharField(primary_key=True, max_length=32, default=new_session_id, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="session_tokens")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    idle_expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    ip = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)

    objects = SessionTokenQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["user", "revoked_at"])]

    def __str__(self) -> str:
        return f"session {self.id} of {self.user_id}"

    def touch(self, now: datetime) -> None:
        """Record a use at ``now``: the idle expiry moves to ``SESSION_TOKEN_IDLE_HOURS``
        from it. Written at most once every :data:`SESSION_TOUCH_EVERY`, so a busy
        session costs no write a request; the bearer token and the console's cookie
        session both keep alive by it."""
        if now - self.last_used_at <= SESSION_TOUCH_EVERY:
            return
        idle_until = now + timedelta(hours=settings.SESSION_TOKEN_IDLE_HOURS)
        SessionToken.objects.filter(pk=self.pk).update(last_used_at=now, idle_expires_at=idle_until)
        self.last_used_at, self.idle_expires_at = now, idle_until


class OneTimeToken(models.Model):
    """Base of single-use, expiring secrets mailed to a user (reset, verification)."""

    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class PasswordReset(OneTimeToken):
    """A password-reset link: 1 hour, single use; a newer one invalidates older ones."""

    id = models.CharField(
        primary_key=True, max_length=32, default=new_password_reset_id, editable=False
    )

    def __str__(self) -> str:
        return f"password reset {self.pk} for {self.user_id}"


class EmailVerification(OneTimeToken):
    """An email-verification link; using it sets the user's ``email_verified_at``."""

    id = models.CharField(
        primary_key=True, max_length=32, default=new_email_verification_id, editable=False
    )

    def __str__(self) -> str:
        return f"email verification {self.pk} for {self.user_id}"


class Invitation(models.Model):
    """An Owner's or Admin's invitation of an email address into a workspace."""

    id = models.CharField(
        primary_key=True, max_length=32, default=new_invitation_id, editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(max_length=254)
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.workspace_id}"


class OutboxEmail(models.Model):
    """An account email waiting to be sent (``accounts.outbox``): written in the
    transaction of the change that asks for it, so it survives a crash or a worker
    restart; sent by the worker's sweep and deleted once sent.

    A ``password_reset_request`` holds no secret: its link is made when it is delivered,
    and only for an existing account. The others carry their link's secret encrypted
    (``secret``, as provider keys are), gone with the row once sent.
    """

    kind = models.CharField(max_length=32)
    to = models.CharField(max_length=254)
    name = models.CharField(max_length=150, blank=True)
    workspace_name = models.CharField(max_length=255, blank=True)
    secret = EncryptedTextField(blank=True)
    ip = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    due_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["due_at"])]

    def __str__(self) -> str:
        return f"{self.kind} email to {self.to}"


class AppendOnlyQuerySet(models.QuerySet["AuditEvent"]):
    """Audit rows are never changed or removed through the ORM."""

    def update(self, **kwargs: Any) -> int:
        raise PermissionError("audit events are append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionError("audit events are append-only")


class AuditEvent(models.Model):
    """One audited action; rows are append-only and hash-chained.

    ``hash`` is an HMAC (key ``hash_key`` of the key ring; plain SHA-256 for rows written
    before the chain was keyed, ``hash_key`` empty) over the previous row's hash and this
    row's canonical content (`accounts.audit`), so removing or editing a row breaks the
    chain even for someone who re-hashes it without the key; ``manage.py audit_verify``
    walks the chain.
    """

    seq = models.BigAutoField(primary_key=True)
    id = models.CharField(max_length=32, unique=True, default=new_audit_event_id, editable=False)
    workspace = models.ForeignKey(
        Workspace,
        on_delete=models.DO_NOTHING,
        null=True,
        blank=True,
        db_constraint=False,
        related_name="+",
    )
    actor = models.CharField(max_length=254)
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=300, blank=True)
    ip = models.CharField(max_length=64, blank=True)
    status = models.CharField(
        max_length=10, choices=AuditStatus.choices, default=AuditStatus.SUCCESS
    )
    meta = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, editable=False)
    hash_key = models.CharField(max_length=12, blank=True, default="", editable=False)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["workspace", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:  # an instance save is an UPDATE: not through the queryset
            raise PermissionError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise PermissionError("audit events are append-only")


class AuditChainHead(models.Model):
    """The single row that serialises appends to the audit chain (locked per append).

    ``legacy_count`` is how many rows predate the keyed chain; ``seal`` is a MAC over
    (count, last hash, legacy count), renewed on each append, so the head cannot be
    edited to hide removed rows or to pass off unkeyed ones.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_hash = models.CharField(max_length=64, default="0" * 64)
    count = models.BigIntegerField(default=0)
    legacy_count = models.BigIntegerField(default=0)
    seal = models.CharField(max_length=80, blank=True, default="")

    def __str__(self) -> str:
        return f"audit chain head after {self.count} events"


class LoginThrottle(models.Model):
    """Failed sign-ins for one email, and until when further attempts must wait."""

    email = models.CharField(max_length=254, unique=True)
    failures = models.PositiveIntegerField(default=0)
    last_failure_at = models.DateTimeField(default=timezone.now)
    locked_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.email}: {self.failures} failures"


class ProviderCredential(models.Model):
    """A workspace's own key for an outside provider (Hugging Face, OpenAI, …).

    ``secret`` is encrypted at rest under the key ring (`matrixcloud.lib.fields`); only
    ``hint`` (•••• and the last 4 characters) is ever shown. Code reads the plaintext
    only through ``accounts.services.providers.provider_secret_read``, which audits it.
    ``usable_by_members``: whether a Member's sandboxes and agent runs may use it (an
    Owner's or Admin's always may); off unless an Owner or Admin turns it on.
    """

    id = models.CharField(
        primary_key=True, max_length=32, default=new_provider_credential_id, editable=False
    )
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="provider_credentials"
    )
    provider = models.CharField(max_length=64)
    label = models.CharField(max_length=64, default="default")
    secret = EncryptedTextField()
    hint = models.CharField(max_length=16)
    meta = models.JSONField(default=dict, blank=True)
    usable_by_members = models.BooleanField(
        default=False,
        help_text="Members' sandboxes and agent runs may use it (Owners and Admins always may).",
    )
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "provider", "label"], name="accounts_provider_label_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.label} of {self.workspace_id} ({self.hint})"


class UsageEvent(models.Model):
    """One metered action (or a batch of them): what kind, how much, by whom.

    Written by ``accounts.services.usage.usage_record`` from every metered code path;
    ``/v1/cloud/usage`` sums ``quantity`` per kind over a window.
    """

    id = models.CharField(
        primary_key=True, max_length=32, default=new_usage_event_id, editable=False
    )
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    runtime_id = models.CharField(max_length=64, blank=True)
    kind = models.CharField(max_length=32, choices=UsageKind.choices)
    quantity = models.BigIntegerField(default=1)
    meta = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["workspace", "kind", "created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(quantity__gte=1), name="accounts_usage_quantity_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} x{self.quantity} in {self.workspace_id}"
