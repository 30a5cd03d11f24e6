"""The MCP client (sandbox.mcp) against real servers and adversarial ones.

Real: the npm reference servers (everything, filesystem, memory; installed by
``./dev test`` from tests/fixtures/npm) and a Python SDK server. Adversarial: the
small scripts in tests/fixtures/servers. Processes are started directly with asyncio
(isolation is the host's business) and killed, with their process group, after each
test. Every scenario runs under a bound, and the ones about time assert it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sandbox.mcp import (
    ClientLimits,
    ConnectionLimits,
    ListLimits,
    McpClient,
    McpClosed,
    McpProtocolError,
    McpRemoteError,
    McpServerExited,
    McpTimeout,
    McpTool,
    tool_fingerprint,
)
from sandbox.mcp.framing import LineFramer, Oversized
from sandbox.mcp.stderr import StderrTap
from tests import REPO_ROOT, TESTS_DIR

FIXTURES = TESTS_DIR / "fixtures"
SERVERS = FIXTURES / "servers"
NPM = FIXTURES / "npm" / "node_modules" / "@modelcontextprotocol"
SCENARIO_BOUND = 30.0
FAST = ClientLimits(discover_wait=0.3, relist_interval=0.05)

needs_npm = pytest.mark.skipif(
    shutil.which("node") is None or not NPM.is_dir(),
    reason="needs node and the npm fixtures: npm ci --prefix tests/fixtures/npm",
)
T = TypeVar("T")


def scenario(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body on a fresh loop, bounded by SCENARIO_BOUND."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), SCENARIO_BOUND))

    return wrapper


def fixture(name: str, *args: str) -> list[str]:
    return [sys.executable, str(SERVERS / name), *args]


def npm_server(package: str, *args: str) -> list[str]:
    return [shutil.which("node") or "node", str(NPM / package / "dist" / "index.js"), *args]


@contextlib.asynccontextmanager
async def session(
    argv: list[str], *, env: dict[str, str] | None = None, **client_kwargs: Any
) -> AsyncIterator[McpClient]:
    """A started server and a client on its pipes; the process group dies afterwards."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    client_kwargs.setdefault("limits", FAST)
    try:
        async with McpClient.from_process(proc, **client_kwargs) as client:
            yield client
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 5)


@contextlib.asynccontextmanager
async def ready(argv: list[str], **kwargs: Any) -> AsyncIterator[McpClient]:
    """A session that is initialized and has listed its tools."""
    async with session(argv, **kwargs) as client:
        await client.initialize(timeout=15)
        await client.list_tools()
        yield client


def text(result: dict[str, Any]) -> str:
    return "".join(block.get("text", "") for block in result["content"])


async def eventually(check: Callable[[], bool], seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# -- real servers ------------------------------------------------------------------------


@pytest.mark.slow
@needs_npm
@scenario
async def test_server_everything_lists_and_echoes() -> None:
    async with session(npm_server("server-everything", "stdio")) as client:
        info = await client.initialize(timeout=15)
        tools = await client.list_tools()
        result = await client.call_tool("echo", {"message": "hello sandbox"})
    assert (info.protocol_version, info.modern) == ("2025-11-25", False)
    assert info.name == "mcp-servers/everything"
    echo = next(tool for tool in tools if tool.name == "echo")
    assert echo.to_contract()["input_schema"]["properties"]["message"]["type"] == "string"
    assert len({tool.fingerprint for tool in tools}) == len(tools) >= 10
    assert text(result) == "Echo: hello sandbox"


@pytest.mark.slow
@needs_npm
@scenario
async def test_server_filesystem_lists_and_reads(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hi from the sandbox\n")
    async with ready(npm_server("server-filesystem", str(tmp_path))) as client:
        listing = await client.call_tool("list_directory", {"path": str(tmp_path)})
        content = await client.call_tool("read_text_file", {"path": str(tmp_path / "hello.txt")})
        outside = await client.call_tool("read_text_file", {"path": "/etc/hostname"})
    assert "[FILE] hello.txt" in text(listing)
    assert text(content) == "hi from the sandbox\n"
    assert outside["isError"] is True  # a tool-level error is a result, not an exception


@pytest.mark.slow
@needs_npm
@scenario
async def test_server_memory_creates_and_reads_an_entity(tmp_path: Path) -> None:
    env = {"MEMORY_FILE_PATH": str(tmp_path / "memory.jsonl")}
    entity = {"name": "Ada", "entityType": "person", "observations": ["wrote the first program"]}
    async with ready(npm_server("server-memory"), env=env) as client:
        await client.call_tool("create_entities", {"entities": [entity]})
        found = await client.call_tool("open_nodes", {"names": ["Ada"]})
    assert "wrote the first program" in text(found)
    assert "Ada" in (tmp_path / "memory.jsonl").read_text()


@pytest.mark.slow
@scenario
async def test_python_sdk_server_speaks_2026_07_28() -> None:
    async with session(fixture("py_server.py")) as client:
        info = await client.initialize(timeout=20)
        tools = await client.list_tools()
        added = await client.call_tool("add", {"a": 2, "b": 3})
        # 8 steps of 0.1 s outlast the 0.5 s timeout: progress keeps the call alive.
        counted = await client.call_tool("count", {"steps": 8}, timeout=0.5)
        failed = await client.call_tool("fail", {"reason": "no such thing"})
        echoes = await asyncio.gather(
            *(client.call_tool("echo", {"message": f"m{i}"}) for i in range(20))
        )
    assert (info.protocol_version, info.modern, info.name) == ("2026-07-28", True, "py-fixture")
    assert {tool.name for tool in tools} == {"add", "echo", "count", "fail"}
    assert added["structuredContent"] == {"result": 5}
    assert text(counted) == "counted 8"
    assert failed["isError"] is True
    assert "no such thing" in text(failed)
    assert [text(r) for r in echoes] == [f"m{i}" for i in range(20)]


# -- handshake ---------------------------------------------------------------------------


@scenario
async def test_old_server_gets_initialize_after_method_not_found() -> None:
    started = time.monotonic()
    async with session(fixture("legacy_2024.py")) as client:
        info = await client.initialize(timeout=10)
        tools = await client.list_tools()
        result = await client.call_tool("echo", {"message": "old"})
    assert (info.protocol_version, info.modern, info.name) == ("2024-11-05", False, "legacy-2024")
    assert [tool.name for tool in tools] == ["echo"]
    assert text(result) == "old"
    assert time.monotonic() - started < FAST.discover_wait + 3  # no waiting on discover


@scenario
async def test_server_ignoring_discover_gets_initialize_after_the_bound() -> None:
    async with session(fixture("legacy_2024.py", "--ignore-unknown")) as client:
        started = time.monotonic()
        info = await client.initialize(timeout=10)
        elapsed = time.monotonic() - started
    assert info.protocol_version == "2024-11-05"
    assert FAST.discover_wait <= elapsed < FAST.discover_wait + 3


@scenario
async def test_unknown_protocol_version_is_refused() -> None:
    async with session(fixture("legacy_2024.py", "--version", "1999-01-01")) as client:
        with pytest.raises(McpProtocolError, match="server chose protocol '1999-01-01'"):
            await client.initialize(timeout=10)


@scenario
async def test_slow_old_server_starts_after_the_discover_bound() -> None:
    async with session(fixture("slow_start.py", "1.0")) as client:
        info = await client.initialize(timeout=10)
        assert text(await client.call_tool("echo", {"message": "late"})) == "late"
    assert (info.protocol_version, info.name) == ("2025-11-25", "slow-start")


@scenario
async def test_slow_modern_server_answers_discover_late_and_refuses_initialize() -> None:
    async with session(fixture("slow_start.py", "1.0", "--modern")) as client:
        info = await client.initialize(timeout=10)
        await client.list_tools()
        assert text(await client.call_tool("echo", {"message": "modern"})) == "modern"
    assert (info.protocol_version, info.modern) == ("2026-07-28", True)


@scenario
async def test_handshake_timeout_is_bounded() -> None:
    async with session(fixture("slow_start.py", "20")) as client:
        started = time.monotonic()
        with pytest.raises(McpTimeout, match=r"^mcp initialize timed out after 0\.5 s$"):
            await client.initialize(timeout=0.5)
    assert time.monotonic() - started < 2.5


@scenario
async def test_server_exiting_at_start_reports_code_and_stderr() -> None:
    lines: list[str] = []
    async with session(fixture("exit_at_start.py"), on_stderr=lines.append) as client:
        started = time.monotonic()
        with pytest.raises(McpServerExited) as caught:
            await client.initialize(timeout=10)
    assert str(caught.value) == "mcp initialize: server exited (code 3)"
    assert caught.value.code == 3
    assert "missing configuration" in caught.value.stderr_tail
    assert lines == ["fatal: cannot start (missing configuration)"]
    assert time.monotonic() - started < 5


# -- tool calls --------------------------------------------------------------------------


@scenario
async def test_unanswered_call_times_out_and_is_cancelled() -> None:
    lines: list[str] = []
    async with ready(fixture("silent_calls.py"), on_stderr=lines.append) as client:
        started = time.monotonic()
        with pytest.raises(McpTimeout, match=r"^mcp tools/call timed out after 0\.3 s$"):
            await client.call_tool("echo", {"message": "?"}, timeout=0.3)
        assert time.monotonic() - started < 2.0
        await eventually(lambda: any(line.startswith("cancelled ") for line in lines))
        assert [tool.name for tool in await client.list_tools()] == ["echo"]  # still usable
    assert any(line.endswith("(timed out)") for line in lines)


@scenario
async def test_abandoned_call_is_cancelled() -> None:
    lines: list[str] = []
    async with ready(fixture("tiny_server.py"), on_stderr=lines.append) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.call_tool("hang", {}, timeout=10), 0.2)
        await eventually(lambda: any(line.endswith("(abandoned by the client)") for line in lines))
        assert len(client.conn.pending) == 0


@scenario
async def test_progress_extends_the_timeout() -> None:
    async with ready(fixture("tiny_server.py")) as client:
        result = await client.call_tool(
            "progress", {"steps": 6, "interval": 0.1}, timeout=0.35, hard_cap=5
        )
    assert text(result) == "done after 6 steps"


@scenario
async def test_progress_never_extends_past_the_hard_cap() -> None:
    lines: list[str] = []
    async with ready(fixture("tiny_server.py"), on_stderr=lines.append) as client:
        started = time.monotonic()
        with pytest.raises(McpTimeout, match=r"after hard cap of 0\.8 s$") as caught:
            await client.call_tool(
                "progress", {"steps": 12, "interval": 0.1}, timeout=0.35, hard_cap=0.8
            )
        elapsed = time.monotonic() - started
        await eventually(lambda: any(line.startswith("cancelled ") for line in lines))
    assert caught.value.hard_cap is True
    assert 0.75 <= elapsed < 2.5


@scenario
async def test_concurrent_calls_on_one_session() -> None:
    async with ready(fixture("tiny_server.py")) as client:
        hang = asyncio.ensure_future(client.call_tool("hang", {}, timeout=0.5))
        results = await asyncio.gather(
            *(client.call_tool("echo", {"message": f"n{i}"}) for i in range(50))
        )
        with pytest.raises(McpTimeout):
            await hang
    assert [text(result) for result in results] == [f"n{i}" for i in range(50)]


@scenario
async def test_server_crashing_mid_call_fails_the_call_with_its_exit_code() -> None:
    async with ready(fixture("crash_mid_call.py")) as client:
        started = time.monotonic()
        with pytest.raises(McpServerExited) as caught:
            await client.call_tool("echo", {"message": "boom"}, timeout=10)
        assert time.monotonic() - started < 5
        assert str(caught.value) == "mcp tools/call: server exited (code 7)"
        assert "panic: something broke" in caught.value.stderr_tail
        with pytest.raises(McpServerExited, match="code 7"):  # later calls fail at once
            await client.call_tool("echo", {"message": "again"})
        assert client.exited
        assert client.exit_code == 7


@scenario
async def test_closing_fails_calls_in_flight() -> None:
    async with ready(fixture("tiny_server.py")) as client:
        hang = asyncio.ensure_future(client.call_tool("hang", {}, timeout=10))
        await asyncio.sleep(0.1)
        await client.aclose()
        with pytest.raises(McpClosed, match=r"^mcp tools/call: client closed$"):
            await hang
        with pytest.raises(McpClosed):
            await client.call_tool("echo", {"message": "after"})


@scenario
async def test_tool_error_and_unknown_tool() -> None:
    async with ready(fixture("tiny_server.py")) as client:
        result = await client.call_tool("nope")
    assert result["isError"] is True
    assert text(result) == "unknown tool nope"


@scenario
async def test_modern_input_required_is_answered_and_retried() -> None:
    async with ready(fixture("tiny_server.py", "--modern")) as client:
        assert client.server is not None
        assert client.server.modern
        result = await client.call_tool("needs_input")
        with pytest.raises(McpProtocolError, match="needs sampling/createMessage"):
            await client.call_tool("needs_sampling")
    answers = json.loads(text(result))
    assert answers["responses"] == {"roots": {"roots": []}, "confirm": {"action": "decline"}}
    assert answers["state"] == "s1"


# -- what the server sends ---------------------------------------------------------------


@scenario
async def test_garbage_on_stdout_is_skipped() -> None:
    async with ready(fixture("garbage_stdout.py")) as client:
        results = [await client.call_tool("echo", {"message": f"g{i}"}) for i in range(4)]
        skipped = client.conn.skipped_lines
    assert [text(result) for result in results] == ["g0", "g1", "g2", "g3"]
    assert skipped >= 20  # banner, non-RPC JSON, bad UTF-8, broken JSON, on every answer


@scenario
async def test_server_requests_get_answers() -> None:
    async with ready(fixture("server_requests.py")) as client:
        answers = json.loads(text(await client.call_tool("answers")))
    assert answers["roots/list"] == {"roots": []}
    assert answers["ping"] == {}
    assert answers["elicitation/create"] == {"action": "decline"}
    assert answers["sampling/createMessage"]["error"]["code"] == -1
    assert answers["no/such-method"]["error"]["code"] == -32601


@pytest.mark.parametrize("modern", [False, True], ids=["handshake", "modern"])
@scenario
async def test_list_changed_relists_once_and_calls_back(modern: bool) -> None:
    changes: list[list[McpTool]] = []
    argv = fixture("list_changed.py", *(["--modern"] if modern else []))
    async with ready(argv, on_tools_changed=changes.append) as client:
        await client.call_tool("mutate")
        await eventually(lambda: bool(changes))
        await asyncio.sleep(0.3)  # the three notifications were one re-list
        current = client.tools
    assert len(changes) == 1
    assert [tool.name for tool in changes[0]] == ["echo", "mutate", "added_2"]
    assert current == changes[0]


@pytest.mark.slow
@scenario
async def test_five_megabyte_tools_list_in_pages() -> None:
    async with session(fixture("huge_tools.py")) as client:
        await client.initialize(timeout=10)
        started = time.monotonic()
        tools = await client.list_tools(timeout=20)
        elapsed = time.monotonic() - started
    assert len(tools) == 500
    assert tools[-1].name == "tool_00499"
    assert len(tools[0].description) > 10_000
    assert elapsed < 10


@pytest.mark.slow
@scenario
async def test_five_megabyte_single_message() -> None:
    async with session(fixture("huge_tools.py", "--pages", "1")) as client:
        await client.initialize(timeout=10)
        assert len(await client.list_tools(timeout=20)) == 500


@scenario
async def test_message_over_the_limit_fails_its_request_only() -> None:
    limits = ClientLimits(connection=ConnectionLimits(max_message_bytes=1_000_000))
    argv = fixture("huge_tools.py", "--pages", "1", "--tools", "200")
    async with session(argv, limits=limits) as client:
        await client.initialize(timeout=10)
        with pytest.raises(McpProtocolError, match="over the 1000000 byte message limit"):
            await client.list_tools(timeout=10)
        assert text(await client.call_tool("echo", {"message": "alive"})) == "alive"


@scenario
async def test_paging_loop_and_page_limit_are_refused() -> None:
    argv = fixture("huge_tools.py", "--tools", "10", "--pages", "2", "--loop")
    async with session(argv) as client:
        await client.initialize(timeout=10)
        with pytest.raises(McpProtocolError, match="repeated a cursor"):
            await client.list_tools()
    limits = ClientLimits(tools_list=ListLimits(max_pages=3))
    argv = fixture("huge_tools.py", "--tools", "10", "--pages", "5")
    async with session(argv, limits=limits) as client:
        await client.initialize(timeout=10)
        with pytest.raises(McpProtocolError, match="more than 3 pages"):
            await client.list_tools()


@scenario
async def test_remote_error_carries_code_and_message() -> None:
    async with ready(fixture("legacy_2024.py")) as client:
        with pytest.raises(McpRemoteError) as caught:
            await client.conn.request("resources/list", {}, idle=5)
    assert caught.value.code == -32601
    assert str(caught.value) == "mcp resources/list error -32601: Method not found"


# -- pieces ------------------------------------------------------------------------------


def test_client_does_not_import_django() -> None:
    code = "import sys, sandbox.mcp; assert not {'django', 'mcp'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_tool_contract_shape_and_fingerprint() -> None:
    full = McpTool.from_wire({"name": "a", "description": "d", "inputSchema": {"type": "object"}})
    bare = McpTool.from_wire({"name": "b", "description": ""})
    null = McpTool.from_wire({"name": "c", "inputSchema": None})
    assert full.to_contract() == {
        "name": "a",
        "description": "d",
        "input_schema": {"type": "object"},
    }
    assert bare.to_contract() == {"name": "b"}
    assert null.to_contract() == {"name": "c", "input_schema": None}
    same = {"inputSchema": {"type": "object"}, "description": "d", "name": "a", "title": "ignored"}
    assert tool_fingerprint(same) == full.fingerprint
    assert tool_fingerprint({**same, "annotations": {"readOnlyHint": True}}) != full.fingerprint


def test_framer_bounds_lines_and_finds_the_id_of_an_oversized_one() -> None:
    framer = LineFramer(max_bytes=100)
    assert framer.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert framer.feed(b":2}\n") == [b'{"b":2}']
    tail_id = b'{"result":{"x":"' + b"y" * 300 + b'"},"jsonrpc":"2.0","id":42}'
    [frame] = framer.feed(tail_id[:150]) + framer.feed(tail_id[150:] + b"\n")
    assert isinstance(frame, Oversized)
    assert frame.size == len(tail_id)
    assert frame.request_id() == 42
    [frame] = framer.feed(b'{"jsonrpc":"2.0","id":7,"result":"' + b"z" * 200 + b'"}\n')
    assert isinstance(frame, Oversized)
    assert frame.request_id() == 7
    assert framer.feed(b"ok\n") == [b"ok"]


def test_stderr_tap_bounds_rate_ring_and_line_length() -> None:
    now = [0.0]
    lines: list[str] = []
    tap = StderrTap(
        ring_bytes=64, on_line=lines.append, lines_per_second=5, max_line_bytes=20,
        clock=lambda: now[0],
    )  # fmt: skip
    tap.feed(b"".join(b"line %d\n" % i for i in range(50)))
    assert lines == [f"line {i}" for i in range(5)]
    now[0] = 1.5
    tap.feed(b"x" * 30 + b" rest of a long line\nafter\n")
    tap.finish()
    assert lines[5:] == [
        "(45 more stderr lines not streamed: over 5/s)",
        "x" * 20 + " …",
        "after",
    ]
    assert len(tap.tail()) <= 64
    assert tap.tail().endswith("after")
