"""Wire shapes of ``/v1/sandbox/sessions`` and ``/v1/matrixshell``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from matrixcloud.api.serializers import SparseSerializer, TimeField
from sandbox.models import SandboxSession
from sandbox.selectors import events_url, session_result


class SandboxCreateSerializer(serializers.Serializer):
    """Body of a sandbox creation (the contract's SandboxRequest): an MCP server to start."""

    entity_id = serializers.CharField(required=False, allow_blank=True)
    ttl_seconds = serializers.IntegerField(
        required=False, help_text="Lifetime in seconds; 0 or absent means the maximum."
    )
    runtime = serializers.CharField(required=False, allow_blank=True, help_text="e.g. node")
    transport = serializers.CharField(required=False, allow_blank=True, help_text="e.g. stdio")
    start_command = serializers.CharField(
        allow_blank=True,
        trim_whitespace=False,
        help_text="The MCP server's command line; checked against the command policy (422).",
    )
    env = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text="Environment for the server; secrets only as ${secret:NAME} references.",
    )
    allow_network = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Give the server network access (only where the installation allows it).",
    )
    network_allow = serializers.ListField(
        child=serializers.CharField(max_length=253),
        required=False,
        max_length=32,
        help_text="Hosts the server may reach through the session's egress proxy "
        "(host, *.domain, address or CIDR, optional :port), within "
        "MATRIX_RUNTIME_EGRESS_CEILING; the catalog entry's hosts are added.",
    )


class SandboxResponseSerializer(serializers.Serializer):
    """Answer to a sandbox creation (202): the session and its backing job (renders the
    new ``SandboxSession``)."""

    session_id = serializers.CharField(source="pk")
    job_id = serializers.CharField()
    status = serializers.SerializerMethodField(help_text="starting")
    expires_at = TimeField(source="job.expires_at")
    events_url = serializers.SerializerMethodField(
        help_text="/v1/sandbox/sessions/<session_id>/events"
    )

    @extend_schema_field(OpenApiTypes.STR)
    def get_status(self, session: SandboxSession) -> str:
        return "starting"

    @extend_schema_field(OpenApiTypes.STR)
    def get_events_url(self, session: SandboxSession) -> str:
        return events_url(session)


class EgressSerializer(serializers.Serializer):
    """How the session's server reaches the network (renders the ``SandboxSession``)."""

    mode = serializers.SerializerMethodField()
    allow = serializers.ListField(child=serializers.CharField(), source="egress_allow")
    denied = serializers.IntegerField(
        source="egress_denied", help_text="Connections the egress proxy refused."
    )

    @extend_schema_field({"type": "string", "enum": ["open", "allowlist"]})
    def get_mode(self, session: SandboxSession) -> str:
        return "open" if session.allow_network else "allowlist"


class SandboxSessionSerializer(SparseSerializer):
    """A sandbox session snapshot: the backing job's status and result (renders a
    ``SandboxSession`` with its job). Kept on purpose: docs/COMPATIBILITY.md#c-09."""

    session_id = serializers.CharField(source="pk")
    job_id = serializers.CharField()
    status = serializers.CharField(source="job.status", help_text="The backing job's status.")
    expires_at = TimeField(source="job.expires_at")
    result = serializers.SerializerMethodField()
    type = serializers.CharField(source="job.type", help_text="The backing job's type.")
    ready = serializers.BooleanField(help_text="Whether the tools are listed.")
    tools_count = serializers.SerializerMethodField()
    created_at = TimeField()
    ready_at = TimeField(allow_null=True)
    stopped_at = TimeField(allow_null=True)
    events_url = serializers.SerializerMethodField()
    server = serializers.DictField(
        source="server_info",
        required=False,
        help_text="The server's protocol version, name and version.",
    )
    egress = EgressSerializer(source="*", required=False)
    error = serializers.CharField(
        source="job.error", required=False, help_text="Present only when it failed."
    )

    omit_unless: ClassVar[dict[str, Callable[[Any], object]]] = {
        "server": lambda session: session.server_info,
        "egress": lambda session: session.allow_network or session.egress_allow,
        "error": lambda session: session.job.error,
    }

    @extend_schema_field({"nullable": True})
    def get_result(self, session: SandboxSession) -> Any:
        return session_result(session)

    @extend_schema_field(OpenApiTypes.INT)
    def get_tools_count(self, session: SandboxSession) -> int:
        return len(session.tools)

    @extend_schema_field(OpenApiTypes.STR)
    def get_events_url(self, session: SandboxSession) -> str:
        return events_url(session)


class ToolSerializer(serializers.Serializer):
    """A tool advertised by the sandbox's MCP server."""

    name = serializers.CharField()
    description = serializers.CharField(required=False, allow_blank=True)
    input_schema = serializers.DictField(help_text="The tool's JSON Schema for its arguments.")


class ToolListSerializer(serializers.Serializer):
    """The tools a sandbox's MCP server advertises."""

    tools = ToolSerializer(many=True)


class ToolCallSerializer(serializers.Serializer):
    """Body of a tool call: the tool's name and its arguments."""

    name = serializers.CharField(allow_blank=True, help_text="An empty name is a 400.")
    arguments = serializers.DictField(required=False)


class ToolCallResultSerializer(serializers.Serializer):
    """Answer to a tool call: the MCP result (a tool-level isError is still ok)."""

    ok = serializers.BooleanField()
    result = serializers.DictField(help_text="The MCP tools/call result, as the server sent it.")


class MatrixShellStatusSerializer(serializers.Serializer):
    """MatrixShell's install status in the sandbox."""

    installed = serializers.BooleanField()
    version = serializers.CharField(allow_blank=True)
    venv = serializers.CharField()
    python = serializers.CharField(allow_blank=True)
    sandbox = serializers.CharField()
    spec = serializers.CharField(help_text="The package spec that install uses.")
    disk_quota = serializers.CharField(
        help_text="What bounds the workspace's MatrixShell dir: loop-ext4, or none."
    )
    disk_quota_reason = serializers.CharField(help_text="Why (or why there is no quota).")
    disk_used_bytes = serializers.IntegerField(
        allow_null=True, help_text="Bytes taken on the quota's file system (its metadata too)."
    )
    disk_limit_bytes = serializers.IntegerField(
        allow_null=True,
        help_text="The quota (MATRIX_RUNTIME_MATRIXSHELL_DISK_MB); null without one.",
    )


class MatrixShellInstallSerializer(serializers.Serializer):
    """Answer to a MatrixShell install (202): the matrixshell.install job to follow."""

    job_id = serializers.CharField()
    events_url = serializers.CharField()


class MatrixShellExecSerializer(serializers.Serializer):
    """Body of a MatrixShell command; an empty command is a 422."""

    command = serializers.CharField(allow_blank=True, trim_whitespace=False)


class MatrixShellExecResultSerializer(serializers.Serializer):
    """What a MatrixShell command printed and how it exited (-1: killed or not started)."""

    command = serializers.CharField()
    stdout = serializers.CharField(allow_blank=True)
    stderr = serializers.CharField(allow_blank=True)
    exit_code = serializers.IntegerField()
