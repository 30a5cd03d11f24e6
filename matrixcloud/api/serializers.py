"""Serializers shared by every API app: the contract's error shape, times as the API
writes them, bodies that leave out what an object lacks.

The convention of every view: the request serializer its schema names reads the body
(``validated(Serializer, request.data)``: a 400 in the error shape, or the clean data);
the objects the service returned are rendered by their serializers
(``JobSerializer(job).data``), inside the envelope the contract names, which the view
writes (``{"runtime": ...}``, ``{"ok": true}``). Documents the service relays as it got
them (an MCP server's tools and results, a job type's result) pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rest_framework import serializers

from matrixcloud.lib.times import RFC3339_FORMAT


class ErrorSerializer(serializers.Serializer):
    """The one error body: ``{"error": message, "status": http_status}``."""

    error = serializers.CharField(help_text="What went wrong, for a person to read.")
    status = serializers.IntegerField(help_text="The HTTP status code, repeated.")


class TimeField(serializers.DateTimeField):
    """A time as the API writes it: RFC 3339 in UTC, to the second (``lib/times.py``),
    as the original wrote them; None stays null."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format=RFC3339_FORMAT, **kwargs)


class SparseSerializer(serializers.Serializer):
    """A serializer that leaves out the fields an object does not have.

    ``omit_unless`` maps a field to the condition (on the object) for it to appear:
    the original's bodies carry ``error`` only for a failed job, ``started_at`` only
    once it started. The schema lists those fields as not required."""

    omit_unless: ClassVar[dict[str, Callable[[Any], object]]] = {}

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = super().to_representation(instance)
        for name, present in self.omit_unless.items():
            if not present(instance):
                data.pop(name, None)
        return dict(data)


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """``data`` read by ``serializer_class``: its validated data, or a 400 (the error
    shape, naming the first field at fault)."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
