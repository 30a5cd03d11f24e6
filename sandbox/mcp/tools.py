"""Tool definitions: the server's raw objects, the contract's shape, a fingerprint each,
and the bounded collection of ``tools/list`` pages.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import McpProtocolError

FINGERPRINT_FIELDS = ("name", "description", "inputSchema", "annotations")


def canonical_json(value: Any) -> bytes:
    """Key-sorted, whitespace-free JSON: the same definition always hashes the same."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def tool_fingerprint(raw: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a tool's name, description, inputSchema and
    annotations (absent fields left out, so absent and ``null`` differ)."""
    subset = {key: raw[key] for key in FINGERPRINT_FIELDS if key in raw}
    return hashlib.sha256(canonical_json(subset)).hexdigest()


@dataclass(frozen=True, slots=True)
class McpTool:
    """One tool as the server advertised it (``raw``), with its fingerprint."""

    name: str
    raw: dict[str, Any] = field(repr=False, compare=False)  # equal by fingerprint
    fingerprint: str

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> McpTool:
        """Wrap one entry of a ``tools/list`` result (the caller checked the name)."""
        return cls(name=raw["name"], raw=raw, fingerprint=tool_fingerprint(raw))

    @property
    def description(self) -> str:
        """The description, or "" when absent or not a string."""
        value = self.raw.get("description")
        return value if isinstance(value, str) else ""

    def to_contract(self) -> dict[str, Any]:
        """The original's shape: ``name``, ``description`` (omitted if empty) and
        ``input_schema`` (the raw ``inputSchema``; omitted if absent, ``None`` if null).

        Kept on purpose: docs/COMPATIBILITY.md#c-09.
        """
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if "inputSchema" in self.raw:
            out["input_schema"] = self.raw["inputSchema"]
        return out


@dataclass(frozen=True, slots=True)
class ListLimits:
    """Bounds on one complete ``tools/list`` (all pages together)."""

    max_pages: int = 100
    max_tools: int = 10_000
    max_bytes: int = 64 * 1024 * 1024


class ToolPager:
    """Accumulates ``tools/list`` pages, enforcing :class:`ListLimits` and refusing a
    cursor that repeats (a server paging in a loop)."""

    def __init__(self, limits: ListLimits) -> None:
        self.limits = limits
        self.tools: list[McpTool] = []
        self.skipped = 0
        self._pages = 0
        self._bytes = 0
        self._cursors: set[str] = set()

    def add_page(self, result: Any, size: int) -> str | None:
        """Take one page; return the next cursor, or ``None`` when the list is complete."""
        self._count_page(size)
        if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
            raise McpProtocolError("mcp tools/list: result has no tools array")
        for raw in result["tools"]:
            self._add_tool(raw)
        cursor = result.get("nextCursor")
        if cursor is None or cursor == "":
            return None
        if not isinstance(cursor, str):
            raise McpProtocolError("mcp tools/list: nextCursor is not a string")
        if cursor in self._cursors:
            raise McpProtocolError("mcp tools/list: the server repeated a cursor (paging loop)")
        self._cursors.add(cursor)
        return cursor

    def _count_page(self, size: int) -> None:
        self._pages += 1
        self._bytes += size
        if self._pages > self.limits.max_pages:
            raise McpProtocolError(f"mcp tools/list: more than {self.limits.max_pages} pages")
        if self._bytes > self.limits.max_bytes:
            raise McpProtocolError(
                f"mcp tools/list: more than {self.limits.max_bytes // 1_048_576} MiB of tools"
            )

    def _add_tool(self, raw: Any) -> None:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            self.skipped += 1  # an entry without a name cannot be called: leave it out
            return
        if len(self.tools) >= self.limits.max_tools:
            raise McpProtocolError(f"mcp tools/list: more than {self.limits.max_tools} tools")
        self.tools.append(McpTool.from_wire(raw))


def same_tools(old: list[McpTool], new: list[McpTool]) -> bool:
    """True when both lists hold the same definitions in the same order."""
    return [t.fingerprint for t in old] == [t.fingerprint for t in new]
