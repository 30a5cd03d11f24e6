"""Django admin for runtimes: join tokens and registered runtimes (read-only, with audited
actions)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.principals import admin_operator
from runtimes.models import JoinToken, Runtime
from runtimes.services import join_token_revoke, runtime_remove, runtime_token_revoke


class _ServiceOnlyAdmin(admin.ModelAdmin):
    """Rows only services write: every field read-only, hashes never shown; the change
    permission exists only for the actions, which go through the services (audited)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return bool(getattr(request.user, "is_superuser", False))

    def has_delete_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: object | None = None) -> list[str]:
        return [f.name for f in self.model._meta.fields if f.name not in self.exclude_fields()]

    def exclude_fields(self) -> tuple[str, ...]:
        return tuple(self.exclude or ())


@admin.register(JoinToken)
class JoinTokenAdmin(_ServiceOnlyAdmin):
    """Join tokens by id and label (their secrets exist only as hashes, not shown here)."""

    list_display = (
        "id", "label", "workspace", "uses", "max_uses", "expires_at", "revoked_at", "created_at",
    )  # fmt: skip
    list_filter = ("revoked_at",)
    search_fields = ("id", "label", "workspace__slug")
    list_select_related = ("workspace",)
    exclude = ("token_hash",)
    ordering = ("-created_at",)
    actions = ("revoke",)

    @admin.action(description="Revoke the selected join tokens (audited)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[JoinToken]) -> None:
        revoked = 0
        for token in queryset.select_related("workspace").filter(revoked_at__isnull=True):
            join_token_revoke(token=token, actor=admin_operator(request, token.workspace))
            revoked += 1
        self.message_user(request, f"Revoked {revoked} join token(s).", messages.SUCCESS)


@admin.register(Runtime)
class RuntimeAdmin(_ServiceOnlyAdmin):
    """Registered remote runtimes with their effective status; the token hash is not
    shown. Actions revoke their tokens or remove them, through the services (audited)."""

    list_display = (
        "id", "name", "workspace", "kind", "status_now", "last_seen_at", "token_revoked_at",
        "version",
    )  # fmt: skip
    list_filter = ("kind", "status")
    search_fields = ("id", "name", "hf_space", "url", "workspace__slug")
    list_select_related = ("workspace",)
    exclude = ("token_hash",)
    ordering = ("-created_at",)
    actions = ("revoke_tokens", "remove")

    @admin.display(description="status now")
    def status_now(self, runtime: Runtime) -> str:
        return runtime.effective_status()

    @admin.action(description="Revoke the selected runtimes' tokens (audited)")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[Runtime]) -> None:
        runtimes = list(queryset.select_related("workspace").filter(token_revoked_at__isnull=True))
        for runtime in runtimes:
            runtime_token_revoke(runtime=runtime, actor=admin_operator(request, runtime.workspace))
        self.message_user(request, f"Revoked {len(runtimes)} runtime token(s).", messages.SUCCESS)

    @admin.action(description="Remove the selected runtimes (audited)")
    def remove(self, request: HttpRequest, queryset: QuerySet[Runtime]) -> None:
        runtimes = list(queryset.select_related("workspace"))
        for runtime in runtimes:
            runtime_remove(runtime=runtime, actor=admin_operator(request, runtime.workspace))
        self.message_user(request, f"Removed {len(runtimes)} runtime(s).", messages.SUCCESS)
