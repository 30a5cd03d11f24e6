"""A small blocking server-sent events client for tests (``http.client``, no dependencies).

It keeps the wire visible: ``Block`` holds every line of one event block as sent, so
tests can check ``id:`` lines, the absence of ``event:`` lines and keepalive comments.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Block:
    """One block of the stream (the lines up to a blank line)."""

    lines: list[str] = field(default_factory=list)

    def field(self, name: str) -> list[str]:
        prefix = f"{name}: "
        return [line[len(prefix) :] for line in self.lines if line.startswith(prefix)]

    @property
    def id(self) -> int | None:
        ids = self.field("id")
        return int(ids[0]) if ids else None

    @property
    def data(self) -> dict[str, Any] | None:
        data = self.field("data")
        return json.loads(data[0]) if data else None

    @property
    def is_keepalive(self) -> bool:
        return self.lines == [": keepalive"]


class Stream:
    """An open ``GET`` to an event stream on 127.0.0.1."""

    def __init__(
        self, port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 10
    ) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", path, headers=headers or {})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def json(self) -> Any:
        return json.loads(self.response.read())

    def lines(self) -> Iterator[str]:
        """Lines as sent (without the newline), until the server closes the stream."""
        while True:
            raw = self.response.readline()
            if not raw:
                return
            yield raw.decode("utf-8").rstrip("\n")

    def blocks(self) -> Iterator[Block]:
        block = Block()
        for line in self.lines():
            if line:
                block.lines.append(line)
            elif block.lines:
                yield block
                block = Block()

    def events(self, count: int | None = None) -> list[Block]:
        """The next ``count`` event blocks (all, to the end, when None); skips comments."""
        found: list[Block] = []
        for block in self.blocks():
            if block.id is not None:
                found.append(block)
                if count is not None and len(found) == count:
                    break
        return found


def python_client_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The original Python client's rule: json-decode what follows ``data: `` on a line,
    skip undecodable data, ignore every other line."""
    for line in lines:
        if line.startswith("data: "):
            try:
                yield json.loads(line[len("data: ") :])
            except ValueError:
                continue
