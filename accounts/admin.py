"""Django admin for accounts: operators manage users, workspaces and sessions here.

Secrets are never shown (only hashes exist, and provider credentials show their hint,
never the secret or its ciphertext); audit rows, usage and one-time tokens are
read-only; revoking sessions goes through the same update the logout service makes, and
deleting a provider credential through the audited service.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import BaseUserCreationForm, UserChangeForm
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import (
    AuditEvent,
    EmailVerification,
    Invitation,
    Membership,
    PasswordReset,
    ProviderCredential,
    SessionToken,
    UsageEvent,
    User,
    Workspace,
)
from accounts.principals import Actor
from accounts.services.providers import provider_delete, provider_update
from accounts.signals import credentials_changed
from matrixcloud.lib.admin import ReadOnlyAdmin


class UserCreationForm(BaseUserCreationForm):
    """Add a user by email and a password typed twice (Django's password validators run)."""

    class Meta:
        model = User
        fields = ("email",)
        field_classes = {"email": forms.EmailField}

    def clean_email(self) -> str:
        email = User.objects.normalize_email(self.cleaned_data["email"]).lower()
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("a user with this email already exists")
        return email


class UserEditForm(UserChangeForm):
    """Edit a user; the password is changed through its own form, never shown."""

    class Meta:
        model = User
        fields = "__all__"
        field_classes = {"email": forms.EmailField}


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    """Users sign in by email; there is no username."""

    form = UserEditForm
    add_form = UserCreationForm
    list_display = ("email", "name", "is_active", "is_staff", "email_verified_at", "created_at")
    list_filter = ("is_active", "is_staff", "is_superuser")
    search_fields = ("email", "name")
    ordering = ("email",)
    readonly_fields = ("id", "created_at", "last_login")
    filter_horizontal = ("groups", "user_permissions")
    fieldsets = (
        (None, {"fields": ("id", "email", "password")}),
        ("Profile", {"fields": ("name", "email_verified_at")}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Dates", {"fields": ("last_login", "created_at")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    """Workspaces (tenants) and their members' roles."""

    list_display = ("name", "slug", "id", "created_at")
    search_fields = ("name", "slug", "id")
    readonly_fields = ("id", "created_at")
    inlines = (MembershipInline,)


@admin.register(SessionToken)
class SessionTokenAdmin(ReadOnlyAdmin):
    """Bearer sessions (only their hashes exist); revoke them with the action."""

    list_display = (
        "id",
        "user",
        "workspace",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "ip",
    )
    list_filter = ("revoked_at",)
    search_fields = ("id", "user__email", "workspace__slug", "ip")
    list_select_related = ("user", "workspace")
    actions = ("revoke",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # needed for the action; fields stay read-only

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in SessionToken._meta.fields]

    @admin.action(description="Revoke the selected sessions")
    def revoke(self, request: HttpRequest, queryset: QuerySet[SessionToken]) -> None:
        ended = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        credentials_changed()
        self.message_user(request, f"Revoked {ended} session(s).", messages.SUCCESS)


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAdmin):
    list_display = ("email", "workspace", "role", "created_at", "expires_at", "accepted_at")
    search_fields = ("email", "workspace__slug")
    exclude = ("token_hash",)


@admin.register(PasswordReset, EmailVerification)
class OneTimeTokenAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "created_at", "expires_at", "used_at")
    search_fields = ("id", "user__email")
    exclude = ("token_hash",)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """The append-only, hash-chained audit log (``manage.py audit_verify`` checks it)."""

    list_display = ("created_at", "action", "actor", "target", "status", "workspace_id", "ip")
    list_filter = ("status", "action")
    search_fields = ("id", "actor", "action", "target", "ip", "workspace__slug")
    ordering = ("-seq",)


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(ReadOnlyAdmin):
    """Workspaces' provider credentials, by hint only; delete them, or let members use
    them or not, with the actions (each through the audited service)."""

    list_display = (
        "id", "workspace", "provider", "label", "hint", "usable_by_members", "created_at",
        "updated_at",
    )  # fmt: skip
    list_filter = ("provider", "usable_by_members")
    search_fields = ("id", "provider", "label", "workspace__slug")
    list_select_related = ("workspace",)
    fields = (
        "id", "workspace", "provider", "label", "hint", "meta", "usable_by_members",
        "created_by", "created_at",
    )  # fmt: skip
    actions = ("delete_credentials", "allow_members", "disallow_members")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProviderCredential]:
        return super().get_queryset(request).defer("secret")  # never even decrypted here

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # needed for the action; fields stay read-only

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return self.fields

    @admin.action(description="Delete the selected credentials (audited)")
    def delete_credentials(
        self, request: HttpRequest, queryset: QuerySet[ProviderCredential]
    ) -> None:
        rows = list(queryset.select_related("workspace"))
        for credential in rows:
            provider_delete(
                credential_id=credential.pk, actor=_operator(credential.workspace, request)
            )
        self.message_user(request, f"Deleted {len(rows)} credential(s).", messages.SUCCESS)

    @admin.action(description="Let members use the selected credentials (audited)")
    def allow_members(self, request: HttpRequest, queryset: QuerySet[ProviderCredential]) -> None:
        self._members_may_use(request, queryset, True)

    @admin.action(description="Stop members using the selected credentials (audited)")
    def disallow_members(
        self, request: HttpRequest, queryset: QuerySet[ProviderCredential]
    ) -> None:
        self._members_may_use(request, queryset, False)

    def _members_may_use(
        self, request: HttpRequest, queryset: QuerySet[ProviderCredential], usable: bool
    ) -> None:
        rows = list(queryset.select_related("workspace"))
        for credential in rows:
            provider_update(
                credential_id=credential.pk,
                usable_by_members=usable,
                actor=_operator(credential.workspace, request),
            )
        self.message_user(request, f"Changed {len(rows)} credential(s).", messages.SUCCESS)


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    """Metered actions as recorded (``/v1/cloud/usage`` sums them per kind)."""

    list_display = ("created_at", "kind", "quantity", "workspace", "user", "runtime_id")
    list_filter = ("kind",)
    search_fields = ("id", "workspace__slug", "user__email", "runtime_id")
    list_select_related = ("workspace", "user")
    ordering = ("-created_at",)


def _operator(workspace: Workspace, request: HttpRequest) -> Actor:
    """A superuser changing credentials here, as the audit log names them (no address:
    these records never carried one)."""
    return Actor.operator(workspace, name=f"operator:{request.user.pk}")
