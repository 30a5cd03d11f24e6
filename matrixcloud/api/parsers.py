"""Request body parsing with the original's leniency and our strictness.

Unknown keys are ignored by the serializers; here ``null`` values are dropped (treated
as absent), malformed JSON or a body that is not one JSON value is a 400
``invalid JSON body: ...``, and an oversized body is a 413.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

from django.core.exceptions import RequestDataTooBig
from rest_framework.parsers import BaseParser

from matrixcloud.errors import BadRequest, PayloadTooLarge


class LenientJSONParser(BaseParser):
    """JSON bodies; a top-level ``null`` or empty body parses as ``{}``."""

    media_type = "application/json"

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            raw = stream.read() if stream is not None else b""
        except RequestDataTooBig as exc:
            raise PayloadTooLarge() from exc
        if not raw or not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from exc
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise BadRequest("invalid JSON body: expected a JSON object")
        # Only top-level nulls mean "absent": a null inside a payload or arguments is data.
        return {key: item for key, item in data.items() if item is not None}
