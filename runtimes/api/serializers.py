"""Wire shapes of remote runtimes and join tokens (under ``/v1/cloud/``)."""

from __future__ import annotations

from rest_framework import serializers


def _caps(*, required: bool = True) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(),
        required=required,
        help_text="Capabilities (job types) it offers.",
    )


class RegisteredRuntimeSerializer(serializers.Serializer):
    """A remote runtime registered to the workspace; offline after 90 s without a heartbeat."""

    id = serializers.CharField()
    workspace_id = serializers.CharField()
    name = serializers.CharField()
    mode = serializers.CharField(allow_blank=True)
    kind = serializers.CharField()
    url = serializers.CharField(allow_blank=True)
    hf_space = serializers.CharField(allow_blank=True)
    region = serializers.CharField(allow_blank=True)
    caps = _caps()
    status = serializers.CharField(help_text="online, offline, or what its heartbeat said.")
    version = serializers.CharField(allow_blank=True)
    last_seen_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()


class RegisteredRuntimeListSerializer(serializers.Serializer):
    """The workspace's registered runtimes, newest first."""

    runtimes = RegisteredRuntimeSerializer(many=True)


class RuntimeRegisterSerializer(serializers.Serializer):
    """Body of a registration: a join token and what the runtime says about itself."""

    join_token = serializers.CharField(help_text="The mxrt_… secret of a join token.")
    name = serializers.CharField(required=False, allow_blank=True)
    kind = serializers.CharField(required=False, allow_blank=True, help_text="Default hf-space.")
    mode = serializers.CharField(required=False, allow_blank=True)
    url = serializers.CharField(required=False, allow_blank=True)
    hf_space = serializers.CharField(required=False, allow_blank=True)
    region = serializers.CharField(required=False, allow_blank=True)
    version = serializers.CharField(required=False, allow_blank=True)
    caps = _caps(required=False)


class RuntimeRegisteredSerializer(serializers.Serializer):
    """Answer to a registration (201): the runtime and its token, shown once."""

    runtime = RegisteredRuntimeSerializer()
    runtime_token = serializers.CharField(help_text="Bearer token for heartbeats; shown once.")


class RuntimeHeartbeatSerializer(serializers.Serializer):
    """Body of a heartbeat (sent with the runtime token as bearer)."""

    status = serializers.CharField(required=False, allow_blank=True, help_text="Default online.")
    caps = _caps(required=False)


class RuntimeHeartbeatResultSerializer(serializers.Serializer):
    """Answer to a heartbeat: the runtime as now recorded."""

    runtime = RegisteredRuntimeSerializer()


class JoinTokenSerializer(serializers.Serializer):
    """A join token of the workspace; its secret is never shown again after minting."""

    id = serializers.CharField()
    label = serializers.CharField(allow_blank=True)  # type: ignore[assignment]
    max_uses = serializers.IntegerField()
    uses = serializers.IntegerField()
    revoked = serializers.BooleanField()
    expires_at = serializers.CharField(
        allow_blank=True, help_text="RFC 3339 UTC; empty when it never expires."
    )
    created_at = serializers.DateTimeField()


class JoinTokenListSerializer(serializers.Serializer):
    """The workspace's join tokens, newest first."""

    join_tokens = JoinTokenSerializer(many=True)


class JoinTokenCreateSerializer(serializers.Serializer):
    """Body of a join-token mint; everything has a default."""

    label = serializers.CharField(required=False, allow_blank=True)  # type: ignore[assignment]
    max_uses = serializers.IntegerField(required=False, help_text="Default 1.")
    ttl_minutes = serializers.IntegerField(required=False, help_text="Default 24 hours.")


class JoinTokenMintedSerializer(serializers.Serializer):
    """Answer to a mint (201): the token and its secret, shown once."""

    join_token = JoinTokenSerializer()
    secret = serializers.CharField(help_text="mxrt_…; shown only in this answer.")
