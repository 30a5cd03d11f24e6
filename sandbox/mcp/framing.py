"""Newline-delimited JSON-RPC framing: split a byte stream into bounded messages.

The stdio transport puts one JSON-RPC message per line. Servers also print other
things on stdout (banners, debug output), so a line that is not a JSON-RPC message is
skipped, not fatal. A line longer than the limit is dropped as it streams in (memory
stays bounded) and reported once it ends, with its first and last bytes so the client
can tell which request it answered.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

EDGE_BYTES = 256
# Where the id of an oversized message can be read without parsing it: right after the
# opening brace (Python servers) or right before the closing one (the Node SDK).
_HEAD_ID = re.compile(rb'^\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(-?\d+)')
_TAIL_ID = re.compile(rb'"id"\s*:\s*(-?\d+)\s*\}\s*$')


@dataclass(frozen=True, slots=True)
class Oversized:
    """A line that exceeded the message limit: its size and its two ends."""

    size: int
    head: bytes
    tail: bytes

    def request_id(self) -> int | None:
        """The JSON-RPC id, when it sits at either end of the message."""
        match = _HEAD_ID.match(self.head) or _TAIL_ID.search(self.tail)
        return int(match.group(1)) if match else None


class LineFramer:
    """Splits chunks into lines; a line over ``max_bytes`` becomes one :class:`Oversized`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._dropping = False
        self._dropped = 0
        self._head = b""
        self._tail = b""

    def feed(self, chunk: bytes) -> list[bytes | Oversized]:
        """Add a chunk; return the lines (without the newline) it completed."""
        out: list[bytes | Oversized] = []
        start = 0
        while (newline := chunk.find(b"\n", start)) >= 0:
            self._append(chunk[start:newline])
            out.append(self._end_line())
            start = newline + 1
        self._append(chunk[start:])
        return out

    def _append(self, piece: bytes) -> None:
        if self._dropping:
            self._dropped += len(piece)
            self._tail = (self._tail + piece)[-EDGE_BYTES:]
            return
        self._buf += piece
        if len(self._buf) > self.max_bytes:
            self._dropping = True
            self._dropped = len(self._buf)
            self._head = bytes(self._buf[:EDGE_BYTES])
            self._tail = bytes(self._buf[-EDGE_BYTES:])
            self._buf.clear()

    def _end_line(self) -> bytes | Oversized:
        if self._dropping:
            self._dropping = False
            return Oversized(self._dropped, self._head, self._tail)
        line = bytes(self._buf)
        self._buf.clear()
        return line


def decode_messages(line: bytes) -> list[dict[str, Any]]:
    """The JSON-RPC messages on one line: none for garbage, several for a batch.

    A ``\\ud800`` escape decodes to a lone surrogate, which has no UTF-8 form: nothing
    downstream (a JSON answer, a stored event) could carry it, so it becomes U+FFFD here.
    """
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # not JSON, bad UTF-8, absurd nesting
        return []
    if _SURROGATE_ESCAPE.search(line):
        try:
            value = _without_lone_surrogates(value)
        except RecursionError:
            return []
    return [item for item in (value if isinstance(value, list) else [value]) if is_jsonrpc(item)]


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    return value


def is_jsonrpc(item: Any) -> bool:
    """True for a JSON-RPC 2.0 request, notification or response object."""
    if not isinstance(item, dict) or item.get("jsonrpc") != "2.0":
        return False
    if "method" in item:
        return isinstance(item["method"], str)
    return "id" in item and ("result" in item or "error" in item)


def encode_message(message: dict[str, Any]) -> bytes:
    """One message as a line. ``json.dumps`` escapes control characters, so the only
    newline is the terminator. A lone surrogate (a ``\\ud800`` escape decodes into one)
    has no UTF-8 form: such a message is written with every non-ASCII character escaped,
    which carries the same value."""
    try:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        text = json.dumps(message, separators=(",", ":")).encode()
    return text + b"\n"
