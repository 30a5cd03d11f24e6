"""Wire shapes of remote runtimes and join tokens (under ``/v1/cloud/``)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from runtimes.choices import RuntimeStatus
from runtimes.models import JoinToken, Runtime

MAX_CAPS = 200
MAX_LIST = 500


def _caps(*, required: bool = True) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=required,
        max_length=MAX_CAPS,
        help_text="Capabilities (job types) it offers.",
    )


class GpuSerializer(serializers.Serializer):
    """One GPU of a runtime, as ``nvidia-smi`` reports it (advisory)."""

    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    memory_mb = serializers.IntegerField(min_value=0, required=False)
    memory_free_mb = serializers.IntegerField(min_value=0, required=False)


class RuntimeResourcesSerializer(serializers.Serializer):
    """What a runtime has to offer, as of its last heartbeat; every field is optional."""

    gpu_memory_mb = serializers.IntegerField(
        min_value=0, required=False, allow_null=True, help_text="Total GPU memory (all GPUs)."
    )
    gpu_memory_free_mb = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    gpus = GpuSerializer(many=True, required=False)
    engines = serializers.ListField(
        child=serializers.CharField(max_length=50),
        required=False,
        max_length=50,
        help_text="Serving engines present (ollama, vllm, sglang...).",
    )
    loaded_models = serializers.ListField(
        child=serializers.CharField(max_length=300), required=False, max_length=MAX_LIST
    )
    free_disk_bytes = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    cpu_count = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    memory_mb = serializers.IntegerField(min_value=0, required=False, allow_null=True)

    def to_representation(self, instance: Any) -> Any:
        # Stored as validated; what the runtime did not report stays absent, not null.
        shown = super().to_representation(instance)
        return {key: value for key, value in shown.items() if key in instance}


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
    status = serializers.SerializerMethodField(
        help_text="What its last heartbeat said, or offline after the threshold of silence."
    )
    version = serializers.CharField(allow_blank=True)
    resources = RuntimeResourcesSerializer()
    token_revoked = serializers.BooleanField()
    last_seen_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()

    def get_status(self, runtime: Runtime) -> str:
        return runtime.effective_status(self.context.get("now"))


class RegisteredRuntimeListSerializer(serializers.Serializer):
    """The workspace's registered runtimes, newest first."""

    runtimes = RegisteredRuntimeSerializer(many=True)


class RegisteredRuntimeResultSerializer(serializers.Serializer):
    """One registered runtime."""

    runtime = RegisteredRuntimeSerializer()


class RuntimeRegisterSerializer(serializers.Serializer):
    """Body of a registration: a join token and what the runtime says about itself."""

    join_token = serializers.CharField(help_text="The mxrt_… secret of a join token.")
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    kind = serializers.CharField(
        required=False, allow_blank=True, max_length=40, help_text="Default hf-space."
    )
    mode = serializers.CharField(required=False, allow_blank=True, max_length=40)
    url = serializers.CharField(required=False, allow_blank=True, max_length=500)
    hf_space = serializers.CharField(required=False, allow_blank=True, max_length=200)
    region = serializers.CharField(required=False, allow_blank=True, max_length=100)
    version = serializers.CharField(required=False, allow_blank=True, max_length=100)
    caps = _caps(required=False)
    resources = RuntimeResourcesSerializer(required=False)

    def to_internal_value(self, data: Any) -> Any:
        # The original accepted "caps": null as "no caps" (docs/COMPATIBILITY.md#c-13).
        if isinstance(data, dict) and data.get("caps", ()) is None:
            data = {key: value for key, value in data.items() if key != "caps"}
        return super().to_internal_value(data)


class RuntimeRegisteredSerializer(serializers.Serializer):
    """Answer to a registration (201), or to a token rotation (200): the runtime and its
    token, shown once."""

    runtime = RegisteredRuntimeSerializer()
    runtime_token = serializers.CharField(help_text="Bearer token for heartbeats; shown once.")


class RuntimeHeartbeatSerializer(serializers.Serializer):
    """Body of a heartbeat (sent with the runtime token as bearer)."""

    status = serializers.ChoiceField(
        choices=RuntimeStatus.choices, required=False, allow_blank=True, help_text="Default online."
    )
    caps = _caps(required=False)
    resources = RuntimeResourcesSerializer(required=False)
    version = serializers.CharField(required=False, allow_blank=True, max_length=100)

    def to_internal_value(self, data: Any) -> Any:
        # "caps": null leaves the stored caps alone, as in the original
        # (docs/COMPATIBILITY.md#c-13).
        if isinstance(data, dict) and data.get("caps", ()) is None:
            data = {key: value for key, value in data.items() if key != "caps"}
        return super().to_internal_value(data)


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
    active = serializers.SerializerMethodField(
        help_text="Not revoked, not expired and not used up."
    )
    expires_at = serializers.DateTimeField(help_text="RFC 3339 UTC; every token expires.")
    created_at = serializers.DateTimeField()

    def get_active(self, token: JoinToken) -> bool:
        return token.is_active(self.context.get("now"))


class JoinTokenListSerializer(serializers.Serializer):
    """The workspace's join tokens, newest first (active ones unless ``?all=true``)."""

    join_tokens = JoinTokenSerializer(many=True)


class JoinTokenResultSerializer(serializers.Serializer):
    """One join token."""

    join_token = JoinTokenSerializer()


class JoinTokenCreateSerializer(serializers.Serializer):
    """Body of a join-token mint; everything has a default."""

    label = serializers.CharField(required=False, allow_blank=True, max_length=200)  # type: ignore[assignment]
    max_uses = serializers.IntegerField(required=False, help_text="Default 1; at most 1000.")
    ttl_minutes = serializers.IntegerField(
        required=False,
        help_text="Default (0 or absent) 24 hours; 1 minute to 30 days; negative is a 422.",
    )


class JoinTokenMintedSerializer(serializers.Serializer):
    """Answer to a mint (201): the token and its secret, shown once."""

    join_token = JoinTokenSerializer()
    secret = serializers.CharField(help_text="mxrt_…; shown only in this answer.")
