"""Wire shapes of ``/v1/auth`` and of the workspace's providers, usage and audit log."""

from __future__ import annotations

from rest_framework import serializers

from accounts.models import Membership
from matrixcloud.api.serializers import TimeField


def _password(min_length: int) -> serializers.CharField:
    return serializers.CharField(
        min_length=min_length, trim_whitespace=False, style={"input_type": "password"}
    )


class SignupSerializer(serializers.Serializer):
    """Body of a signup: the owner and, optionally, the workspace's name."""

    name = serializers.CharField()
    email = serializers.EmailField()
    # The contract's floor; the password policy (validators) is stricter.
    password = _password(6)
    workspace = serializers.CharField(
        required=False, allow_blank=True, help_text="Default: <name>'s workspace."
    )


class LoginSerializer(serializers.Serializer):
    """Body of a login."""

    email = serializers.EmailField()
    password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})


class AuthUserSerializer(serializers.Serializer):
    """The signed-in user and their workspace (renders a ``Membership``): the original's
    user JSON plus ``email_verified``. Kept on purpose: docs/COMPATIBILITY.md#c-07."""

    id = serializers.CharField(source="user.pk")
    name = serializers.CharField(source="user.name")
    email = serializers.CharField(source="user.email")
    role = serializers.CharField(help_text="Owner, Admin or Member.")
    workspace = serializers.CharField(source="workspace.name", help_text="The workspace's name.")
    workspace_slug = serializers.CharField(source="workspace.slug")
    workspace_id = serializers.CharField()
    email_verified = serializers.SerializerMethodField()

    def get_email_verified(self, membership: Membership) -> bool:
        return membership.user.email_verified_at is not None


class AuthResultSerializer(serializers.Serializer):
    """A new session: its bearer token and the user (renders an ``IssuedSession``)."""

    token = serializers.CharField(help_text="Session bearer token")
    user = AuthUserSerializer(source="membership")


class CurrentUserSerializer(serializers.Serializer):
    """The user behind the session (renders their ``Membership``)."""

    user = AuthUserSerializer(source="*")


class OkSerializer(serializers.Serializer):
    """A plain acknowledgement."""

    ok = serializers.BooleanField()


class OkMessageSerializer(serializers.Serializer):
    """An acknowledgement with a message for a person."""

    ok = serializers.BooleanField()
    message = serializers.CharField()


class ForgotPasswordSerializer(serializers.Serializer):
    """Body of a password-reset request."""

    email = serializers.CharField()


class ResetPasswordSerializer(serializers.Serializer):
    """Body of a password reset: the emailed token and the new password."""

    token = serializers.CharField(help_text="The mxpr_… token from the reset link.")
    password = _password(8)


class VerifyEmailSerializer(serializers.Serializer):
    """Body of an email verification."""

    token = serializers.CharField(help_text="The mxev_… token from the verification link.")


class ProviderCredentialSerializer(serializers.Serializer):
    """A stored provider credential; only a hint of the secret is ever shown (the
    original's provider JSON plus ``updated_at``: docs/COMPATIBILITY.md#c-07)."""

    id = serializers.CharField()
    provider = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    hint = serializers.CharField(
        help_text="•••• and the secret's last 4 characters (only •••• under 8 characters)."
    )
    meta = serializers.DictField(allow_null=True)
    usable_by_members = serializers.BooleanField(
        help_text="Members' sandboxes and agent runs may use it (Owners and Admins always may)."
    )
    created_at = TimeField()
    updated_at = TimeField(help_text="When the credential was last changed.")


class ProviderCredentialListSerializer(serializers.Serializer):
    """The workspace's provider credentials, by provider."""

    providers = ProviderCredentialSerializer(many=True)


class ProviderCredentialCreateSerializer(serializers.Serializer):
    """Body of a provider credential (stored encrypted; same provider and label replaces)."""

    # A blank provider or secret: the service's "provider and secret are required".
    provider = serializers.CharField(
        allow_blank=True, help_text="e.g. huggingface, openai, anthropic"
    )
    label = serializers.CharField(  # type: ignore[assignment]
        required=False, allow_blank=True, help_text="Default: default."
    )
    secret = serializers.CharField(allow_blank=True, trim_whitespace=False, write_only=True)
    meta = serializers.DictField(required=False)
    usable_by_members = serializers.BooleanField(
        required=False,
        help_text="Let Members' sandboxes and agent runs use it. Default: off for a new "
        "credential, unchanged for a replaced one.",
    )


class ProviderCredentialUpdateSerializer(serializers.Serializer):
    """Body of a change to a stored credential (its secret is replaced by storing again)."""

    usable_by_members = serializers.BooleanField(
        help_text="Let Members' sandboxes and agent runs use it."
    )


class ProviderCredentialResultSerializer(serializers.Serializer):
    """Answer to storing a provider credential (201)."""

    provider = ProviderCredentialSerializer()


class UsageSerializer(serializers.Serializer):
    """Metered usage of the last 30 days, summed per kind."""

    since = TimeField()
    usage = serializers.DictField(
        child=serializers.IntegerField(), help_text="kind (e.g. sandbox.start) → quantity"
    )


class AuditEventSerializer(serializers.Serializer):
    """One audit record: who did what to what, from where, and whether it worked."""

    id = serializers.CharField()
    workspace_id = serializers.CharField()
    actor = serializers.CharField()
    action = serializers.CharField()
    target = serializers.CharField(allow_blank=True)
    ip = serializers.CharField(allow_blank=True)
    status = serializers.ChoiceField(choices=["success", "failure"])
    meta = serializers.DictField(allow_null=True)
    created_at = serializers.DateTimeField()


class AuditLogSerializer(serializers.Serializer):
    """A page of the workspace's audit events, newest first, and the next page's cursor."""

    events = AuditEventSerializer(many=True)
    next_cursor = serializers.CharField(
        allow_null=True, help_text="Pass as ?cursor= for older events; null on the last page."
    )


class InvitationCreateSerializer(serializers.Serializer):
    """Body of an invitation: who, and as what (Admin or Member)."""

    email = serializers.CharField()
    role = serializers.ChoiceField(choices=["Admin", "Member"], required=False)


class InvitationSerializer(serializers.Serializer):
    """A pending or accepted invitation (the secret is only in the email)."""

    id = serializers.CharField()
    email = serializers.CharField()
    role = serializers.CharField()
    workspace_id = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    accepted_at = serializers.DateTimeField(allow_null=True)


class InvitationResultSerializer(serializers.Serializer):
    """Answer to an invitation (201)."""

    invitation = InvitationSerializer()


class InvitationListSerializer(serializers.Serializer):
    """The workspace's pending invitations."""

    invitations = InvitationSerializer(many=True)


class InvitationAcceptSerializer(serializers.Serializer):
    """Body of an acceptance: the emailed token, the password, a name for a new account."""

    token = serializers.CharField()
    password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})
    name = serializers.CharField(required=False, allow_blank=True)


class MemberSerializer(serializers.Serializer):
    """A member of the workspace."""

    user_id = serializers.CharField()
    name = serializers.CharField(source="user.name")
    email = serializers.CharField(source="user.email")
    role = serializers.CharField()
    joined_at = serializers.DateTimeField(source="created_at")


class MemberListSerializer(serializers.Serializer):
    """The workspace's members."""

    members = MemberSerializer(many=True)
