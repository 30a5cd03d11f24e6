"""Serializers shared by every API app: the contract's error shape."""

from __future__ import annotations

from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """The one error body: ``{"error": message, "status": http_status}``."""

    error = serializers.CharField(help_text="What went wrong, for a person to read.")
    status = serializers.IntegerField(help_text="The HTTP status code, repeated.")
