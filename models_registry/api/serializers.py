"""Wire shapes of ``/v1/model-sources``, ``/v1/model-profiles`` and ``/v1/model-installations``."""

from __future__ import annotations

from rest_framework import serializers

PROFILE_STATUSES = [
    "profile_only",
    "queued",
    "downloading",
    "installed",
    "attached",
    "ready",
    "failed",
    "gated",
    "incompatible",
]
INSTALLATION_STATUSES = [
    "queued",
    "checking",
    "downloading",
    "verifying",
    "attached",
    "ready",
    "failed",
]
INSTALL_MODES = ["pull_from_source", "mount_volume", "external_endpoint"]


def _text() -> serializers.CharField:
    """An optional string of a request body; empty is allowed."""
    return serializers.CharField(required=False, allow_blank=True)


class HuggingFaceSearchQuerySerializer(serializers.Serializer):
    """Query of a Hugging Face search."""

    q = serializers.CharField(required=False, help_text="Search text.")
    task = serializers.CharField(required=False, help_text="Pipeline tag; empty or any: all.")
    limit = serializers.IntegerField(required=False, help_text="1 to 50; default 16.")


class HuggingFaceModelSerializer(serializers.Serializer):
    """One Hugging Face search hit."""

    id = serializers.CharField()
    pipeline_tag = serializers.CharField(required=False)
    downloads = serializers.IntegerField(required=False)
    likes = serializers.IntegerField(required=False)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    library_name = serializers.CharField(required=False)
    gated = serializers.BooleanField(required=False)
    private = serializers.BooleanField(required=False)


class HuggingFaceSearchSerializer(serializers.Serializer):
    """Search hits by downloads; live is false (with error) when Hugging Face failed."""

    live = serializers.BooleanField()
    items = HuggingFaceModelSerializer(many=True)
    error = serializers.CharField(required=False, help_text="Why the search is not live.")


class ResolveSourceSerializer(serializers.Serializer):
    """Body of a resolve: a model source (camelCase, as the original console sends it).

    Kept on purpose: docs/COMPATIBILITY.md#c-12.
    """

    sourceType = serializers.CharField(required=False, allow_blank=True, help_text="huggingface")
    externalId = _text()
    model = _text()
    sourceUri = _text()
    provider = _text()
    path = _text()
    branch = _text()
    private = serializers.BooleanField(required=False)


class ProfilePreviewSerializer(serializers.Serializer):
    """A model-profile preview from a resolved source (not stored)."""

    source_type = serializers.CharField()
    provider = serializers.CharField(allow_blank=True)
    external_id = serializers.CharField(allow_blank=True)
    display_name = serializers.CharField(allow_blank=True)
    source_uri = serializers.CharField(allow_blank=True)
    task = serializers.CharField(allow_blank=True)
    library = serializers.CharField(allow_blank=True)
    license = serializers.CharField(allow_blank=True)
    private = serializers.BooleanField()
    requires_gpu = serializers.BooleanField(required=False)
    recommended_runtime = serializers.CharField(allow_blank=True)
    estimated_parameters = serializers.IntegerField(required=False)
    tags = serializers.ListField(child=serializers.CharField(), required=False, allow_null=True)


class ModelProfileSerializer(serializers.Serializer):
    """A model profile of the workspace: where a model comes from and its install status."""

    id = serializers.CharField()
    source_type = serializers.CharField(allow_blank=True)
    source_uri = serializers.CharField(allow_blank=True)
    provider = serializers.CharField(allow_blank=True)
    external_id = serializers.CharField(allow_blank=True)
    display_name = serializers.CharField(allow_blank=True)
    task = serializers.CharField(allow_blank=True)
    library = serializers.CharField(allow_blank=True)
    license = serializers.CharField(allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField(), allow_null=True)
    status = serializers.ChoiceField(choices=PROFILE_STATUSES)
    created_at = serializers.DateTimeField()
    metadata = serializers.DictField(allow_null=True)
    error = serializers.CharField(required=False, help_text="Why the last install failed.")


class ModelProfileImportSerializer(serializers.Serializer):
    """Body of a profile import; nothing is required, display_name defaults to external_id."""

    source_type = _text()
    source_uri = _text()
    provider = _text()
    external_id = _text()
    display_name = _text()
    task = _text()
    library = _text()
    license = _text()
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    metadata = serializers.DictField(required=False)


class ModelProfileListSerializer(serializers.Serializer):
    """The workspace's model profiles, newest first."""

    profiles = ModelProfileSerializer(many=True)


class ModelProfileResultSerializer(serializers.Serializer):
    """Answer to a profile import (201): the stored profile."""

    profile = ModelProfileSerializer()


class ModelAttachSerializer(serializers.Serializer):
    """Body of an attach: the runtime to install the profile on, and how."""

    runtimeId = serializers.CharField(help_text="A runtime of the workspace, or the local one.")
    installMode = serializers.ChoiceField(
        choices=INSTALL_MODES, required=False, help_text="Default pull_from_source."
    )
    servingEngine = serializers.CharField(required=False, allow_blank=True, help_text="e.g. vLLM")
    path = serializers.CharField(
        required=False, allow_blank=True, help_text="mount_volume: the model folder on the runtime."
    )
    endpointUrl = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="external_endpoint: the OpenAI-compatible server (default: the source URI).",
    )


class ModelAttachAcceptedSerializer(serializers.Serializer):
    """Answer to an attach (202): the installation and the model.attach job to follow."""

    installation_id = serializers.CharField()
    profile_id = serializers.CharField()
    job_id = serializers.CharField()
    events_url = serializers.CharField(help_text="/v1/jobs/<job_id>/events")


class ModelInstallationSerializer(serializers.Serializer):
    """A profile installed (or being installed) on a runtime, with its progress."""

    id = serializers.CharField()
    model_profile_id = serializers.CharField()
    runtime_id = serializers.CharField()
    install_mode = serializers.CharField()
    serving_engine = serializers.CharField(allow_blank=True)
    status = serializers.ChoiceField(choices=INSTALLATION_STATUSES)
    progress = serializers.IntegerField(min_value=0, max_value=100)
    local_path = serializers.CharField(allow_blank=True)
    endpoint_url = serializers.CharField(allow_blank=True)
    model_name = serializers.CharField(allow_blank=True)
    provider = serializers.CharField(allow_blank=True)
    job_id = serializers.CharField(allow_blank=True)
    updated_at = serializers.DateTimeField()
    error = serializers.CharField(required=False, help_text="Why the installation failed.")


class ModelInstallationListSerializer(serializers.Serializer):
    """The workspace's installations, newest first."""

    installations = ModelInstallationSerializer(many=True)
