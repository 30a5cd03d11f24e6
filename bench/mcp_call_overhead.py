"""What the MCP client adds to a tool call, over a bare stdio round trip.

For each server (the npm ``server-everything`` and the tiny raw fixture server) it
starts one server process per path below and times ``--calls`` calls of the ``echo``
tool (after ``--warmup`` unmeasured ones), taking the paths in turn call by call so
that machine noise hits them alike. The paths:

* ``direct``: the least a caller can do: write one JSON-RPC line, read lines until the
  one with the id (asyncio streams, same loop costs as the client);
* ``client``: ``sandbox.mcp.McpClient.call_tool`` (timers, progress token, framing,
  cancellation bookkeeping);
* ``sdk`` (with ``--sdk``): the ``mcp`` 2.x SDK's ``mcp.Client`` over its own stdio
  transport, for the build-or-buy decision.

It also times ``import mcp`` against ``import sandbox.mcp`` in fresh interpreters.
Run from the repository root (``npm ci --prefix tests/fixtures/npm`` first)::

    .venv/bin/python bench/mcp_call_overhead.py --calls 500 --sdk

Results are printed as Markdown for bench/README.md ("MCP client").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import write_report  # noqa: E402
from sandbox.mcp import McpClient  # noqa: E402

NPM = ROOT / "tests" / "fixtures" / "npm" / "node_modules" / "@modelcontextprotocol"
SERVERS = {
    "server-everything": [
        shutil.which("node") or "node",
        str(NPM / "server-everything" / "dist" / "index.js"),
        "stdio",
    ],
    "tiny raw server": [
        sys.executable,
        str(ROOT / "tests" / "fixtures" / "servers" / "tiny_server.py"),
    ],
}
PIPE = asyncio.subprocess.PIPE
Call = Callable[[int], Awaitable[Any]]


async def start(argv: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, stdin=PIPE, stdout=PIPE, stderr=subprocess.DEVNULL
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


async def direct_path(argv: list[str], stack: contextlib.AsyncExitStack) -> Call:
    """A bare round trip: initialize by hand, then one line out, lines in until the id."""
    proc = await start(argv)
    stack.push_async_callback(stop, proc)
    assert proc.stdin is not None
    assert proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    ids = iter(range(1, 10**9))

    async def rpc(method: str, params: dict[str, Any]) -> Any:
        request_id = next(ids)
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        stdin.write(json.dumps(message).encode() + b"\n")
        while True:
            reply = json.loads(await stdout.readline())
            if reply.get("id") == request_id:
                return reply["result"]

    await rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                             "clientInfo": {"name": "bench", "version": "0"}})  # fmt: skip
    stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    return lambda i: rpc("tools/call", {"name": "echo", "arguments": {"message": f"m{i}"}})


async def client_path(argv: list[str], stack: contextlib.AsyncExitStack) -> Call:
    proc = await start(argv)
    stack.push_async_callback(stop, proc)
    client = await stack.enter_async_context(McpClient.from_process(proc))
    await client.initialize(timeout=30)
    await client.list_tools()
    return lambda i: client.call_tool("echo", {"message": f"m{i}"})


async def sdk_path(argv: list[str], stack: contextlib.AsyncExitStack) -> Call:
    import mcp
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
    client = await stack.enter_async_context(mcp.Client(params, mode="auto"))
    return lambda i: client.call_tool("echo", {"message": f"m{i}"})


async def interleaved(paths: dict[str, Call], calls: int, warmup: int) -> dict[str, list[float]]:
    """One call on each path in turn, so machine noise hits every path alike."""
    samples: dict[str, list[float]] = {kind: [] for kind in paths}
    for i in range(warmup + calls):
        for kind, call in paths.items():
            started = time.perf_counter()
            await call(i)
            if i >= warmup:
                samples[kind].append((time.perf_counter() - started) * 1000)
    return samples


def import_seconds(module: str, runs: int = 3) -> float:
    """Best of ``runs`` fresh interpreters, minus an interpreter doing nothing."""

    def best(code: str) -> float:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
            times.append(time.perf_counter() - started)
        return min(times)

    return best(f"import {module}") - best("pass")


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95) - 1]


async def run(calls: int, warmup: int, with_sdk: bool) -> dict[str, Any]:
    openers: dict[str, Callable[[list[str], contextlib.AsyncExitStack], Awaitable[Call]]] = {
        "direct": direct_path,
        "client": client_path,
    }
    if with_sdk:
        openers["sdk"] = sdk_path
    print("| server | path | median ms | p95 ms | median over direct |\n|---|---|---|---|---|")
    results: dict[str, Any] = {}
    for server, argv in SERVERS.items():
        async with contextlib.AsyncExitStack() as stack:
            paths = {kind: await opener(argv, stack) for kind, opener in openers.items()}
            samples = await interleaved(paths, calls, warmup)
        base = statistics.median(samples["direct"])
        for kind, values in samples.items():
            median, p95 = summary(values)
            extra = "" if kind == "direct" else f"{(median - base) * 1000:+.0f} µs"
            print(f"| {server} | {kind} | {median:.3f} | {p95:.3f} | {extra} |")
            results.setdefault(server, {})[kind] = {
                "median_ms": round(median, 4),
                "p95_ms": round(p95, 4),
                "over_direct_us": round((median - base) * 1000, 1),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--sdk", action="store_true", help="also time the mcp SDK client")
    parser.add_argument("--json", type=Path, help="also write the results here (run_all)")
    args = parser.parse_args()
    results = asyncio.run(run(args.calls, args.warmup, args.sdk))
    print()
    imports = {}
    for module in ("sandbox.mcp", "mcp"):
        imports[module] = round(import_seconds(module), 3)
        print(f"- `import {module}`: {imports[module]:.2f} s")
    write_report(args.json, "mcp_call_overhead", {"calls": results, "import_s": imports})


if __name__ == "__main__":
    main()
