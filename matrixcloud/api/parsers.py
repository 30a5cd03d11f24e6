"""Request body parsing with the original's leniency and our strictness.

What we keep and what we tightened: docs/COMPATIBILITY.md#c-03 and #f-10.

Unknown keys are ignored by the serializers; here ``null`` values are dropped (treated
as absent), malformed JSON or a body that is not one JSON value is a 400
``invalid JSON body: ...``, and an oversized body is a 413. So is JSON that parses but
that no store can hold: nesting deeper than the parser's recursion limit, a NUL
(``\u0000``, which PostgreSQL text and jsonb refuse) or a lone surrogate (``\ud800``,
not encodable as UTF-8) in any string or key; before this they were 500s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import IO, Any

from django.core.exceptions import RequestDataTooBig
from rest_framework.parsers import BaseParser

from matrixcloud.errors import BadRequest, PayloadTooLarge

# Escapes that decode to a NUL or to half of a surrogate pair: only a body holding one
# of these is walked for strings that cannot be stored.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def _unstorable(value: Any) -> str | None:
    """Why a parsed JSON value cannot be stored as text, or None. Iterative (no depth limit)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return "strings may not contain NUL (\\u0000)"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "strings may not contain a lone surrogate (\\ud800-\\udfff)"
    return None


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
            # Strict UTF-8 (RFC 8259); json.loads of bytes would let encoded lone
            # surrogates through ('surrogatepass') and guess other encodings.
            text = raw.decode("utf-8-sig")
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from exc
        except RecursionError as exc:
            raise BadRequest("invalid JSON body: nested too deeply") from exc
        if _SUSPECT_ESCAPE.search(text) and (reason := _unstorable(data)):
            raise BadRequest(f"invalid JSON body: {reason}")
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise BadRequest("invalid JSON body: expected a JSON object")
        # Only top-level nulls mean "absent": a null inside a payload or arguments is data.
        return {key: item for key, item in data.items() if item is not None}
