"""Response shapes of the platform endpoints (health, version, ready, capabilities, …).

Output only: they render what the lib and selector modules computed and give the
generated OpenAPI schema its component names. They hold no rules. A field that is not
required is left out of the answer when the computed value lacks it (DRF skips it).
"""

from __future__ import annotations

from rest_framework import serializers


class HealthSerializer(serializers.Serializer):
    status = serializers.CharField()
    runtime_id = serializers.CharField()
    mode = serializers.CharField()
    version = serializers.CharField()


class VersionSerializer(serializers.Serializer):
    name = serializers.CharField()
    implementation = serializers.CharField()
    version = serializers.CharField()
    commit = serializers.CharField()
    build_time = serializers.CharField()
    mode = serializers.CharField()
    python = serializers.CharField()
    django = serializers.CharField()


class ReadyChecksSerializer(serializers.Serializer):
    mode_valid = serializers.BooleanField()
    database = serializers.BooleanField()
    data_dir_writable = serializers.BooleanField()
    bus = serializers.BooleanField()
    worker = serializers.BooleanField()
    sandbox_host = serializers.BooleanField()
    isolation = serializers.BooleanField(
        required=False,
        help_text="Production modes only: sandboxes are isolated, or explicitly allowed not to be.",
    )


class ReadyWarningSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class ReadinessSerializer(serializers.Serializer):
    ready = serializers.BooleanField()
    checks = ReadyChecksSerializer()
    warnings = ReadyWarningSerializer(many=True)
    isolation = serializers.CharField()
    limits = serializers.CharField(
        help_text="What enforces each sandbox's aggregate limits: cgroup-v2, cgroup-v1 or "
        "rlimits (per process only)."
    )
    disk_quota = serializers.CharField(
        help_text="What enforces each sandbox's disk quota: loop-ext4, or none."
    )
    error = serializers.CharField(required=False, help_text="Only when not ready.")
    status = serializers.IntegerField(required=False, help_text="503, only when not ready.")


class RuntimeDetectionSerializer(serializers.Serializer):
    node = serializers.BooleanField()
    python = serializers.BooleanField()
    ollama = serializers.BooleanField()
    vllm = serializers.BooleanField()
    sglang = serializers.BooleanField()


class CapabilityLimitsSerializer(serializers.Serializer):
    max_ttl_seconds = serializers.IntegerField()
    max_concurrent_jobs = serializers.IntegerField()


class CapabilitiesSerializer(serializers.Serializer):
    capabilities = serializers.ListField(
        child=serializers.CharField(), help_text="Job types this installation accepts."
    )
    runtimes = RuntimeDetectionSerializer()
    limits = CapabilityLimitsSerializer()


class StorageAreasSerializer(serializers.Serializer):
    models = serializers.IntegerField()
    mcp = serializers.IntegerField()
    agents = serializers.IntegerField()
    jobs = serializers.IntegerField()
    logs = serializers.IntegerField()
    database = serializers.IntegerField()


class StorageSerializer(serializers.Serializer):
    data_dir = serializers.CharField(required=False, help_text="Only for operators.")
    areas = StorageAreasSerializer()
    total_bytes = serializers.IntegerField()
    free_bytes = serializers.IntegerField()
    jobs_count = serializers.IntegerField()


class PolicyEntrySerializer(serializers.Serializer):
    name = serializers.CharField()
    active = serializers.BooleanField()
    body = serializers.DictField()


class PoliciesSerializer(serializers.Serializer):
    policies = PolicyEntrySerializer(many=True)


class RuntimeProcessSerializer(serializers.Serializer):
    role = serializers.CharField()
    hostname = serializers.CharField()
    pid = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    seen_at = serializers.DateTimeField()
    live = serializers.BooleanField()


class LocalRuntimeSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField(help_text="Online, or Degraded without a live worker and host.")
    statusClass = serializers.CharField()  # camelCase: docs/COMPATIBILITY.md#c-14
    mode = serializers.CharField()
    region = serializers.CharField()
    caps = serializers.ListField(child=serializers.CharField())
    runtimes = RuntimeDetectionSerializer()
    jobs = serializers.IntegerField(help_text="Jobs queued or running.")
    version = serializers.CharField()
    heartbeat = serializers.CharField(help_text="Age of the latest heartbeat, for people.")
    live = serializers.BooleanField()
    processes = RuntimeProcessSerializer(many=True)


class LocalRuntimeListSerializer(serializers.Serializer):
    runtimes = LocalRuntimeSerializer(many=True)


class CatalogItemSerializer(serializers.Serializer):
    id = serializers.CharField()
    initials = serializers.CharField()
    name = serializers.CharField()
    kind = serializers.CharField()
    kind_class = serializers.CharField()
    runtime = serializers.CharField()
    transport = serializers.CharField(required=False)
    secrets = serializers.BooleanField()
    network = serializers.CharField()
    verified = serializers.BooleanField()
    sandbox = serializers.BooleanField()
    start_command = serializers.CharField(required=False)
    # DRF moves declared fields off the class, so this does not clobber Field.source.
    source = serializers.CharField()  # type: ignore[assignment]
    license = serializers.CharField()
    version = serializers.CharField(required=False)
    desc = serializers.CharField()


class CatalogSerializer(serializers.Serializer):
    items = CatalogItemSerializer(many=True)
