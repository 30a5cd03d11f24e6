"""First launch: an ``npx`` catalog server from an empty sandbox cache to ``ready``, and
the launch after it, from the cache (issue #18 §1).

A real ``manage.py serve`` on an empty data dir (its own embedded bus on ``sqlite``;
PostgreSQL + Redis on ``postgres``), driven over HTTP on loopback as the local-dev
operator: ``POST /v1/sandbox/sessions`` of ``npx -y @modelcontextprotocol/server-everything``
on one keep-alive connection, then the session's event stream until ``ready``. The
package comes from the machine's npm registry (registry.npmjs.org unless npm is
configured otherwise) through the session's install step; it must answer.

``cold``
    ``--cold`` first launches, each from an empty sandbox cache *and* an empty npm
    download cache (the host's ``npm_config_cache`` points at a folder of the bench's
    own, emptied before each): every tarball comes from the registry.
``warm``
    ``--warm`` first launches from an empty sandbox cache with npm's download cache
    warm (left by the run before): npm still asks the registry for the package's
    metadata (it revalidates), but reads the tarballs from its cache.
``cached``
    ``--cached`` launches with the package in the sandbox cache: no install step, no
    network.

Between runs the sandbox cache (``<data>/sandbox-cache``) is removed while ``serve``
runs: the host looks for the package on disk at each launch, so the next launch finds it
empty, as on a fresh data dir. Each session is deleted once ready.

    .venv/bin/python bench/first_launch.py                     # 3 cold, 3 warm, 5 cached
    .venv/bin/python bench/first_launch.py --stack both --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    ENV_DROPPED,
    REDIS_URL,
    REPO,
    STACKS,
    free_port,
    http_ok,
    postgres_database,
    processes,
    wait_until,
    write_report,
)

COMMAND = "npx -y @modelcontextprotocol/server-everything"
PACKAGE = "@modelcontextprotocol/server-everything"
READY_TIMEOUT = 300.0  # one launch, install included
SERVE_TIMEOUT = 120.0
REGISTRY_TIMEOUT = 5.0


# --- the installation ----------------------------------------------------------------------
@contextlib.contextmanager
def served(stack: str, work: Path) -> Iterator[tuple[int, Path]]:
    """``manage.py serve`` on an empty data dir on ``stack``; yields (port, data dir).
    npm's download cache is ``work/npm-cache``, which the runs empty or keep."""
    data = work / "data"
    data.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ENV_DROPPED}
    env.update(
        DJANGO_SETTINGS_MODULE="matrixcloud.settings",
        MATRIX_RUNTIME_DATA_DIR=str(data),
        MATRIX_RUNTIME_MODE="local-dev",
        MATRIX_RUNTIME_BUS_PREFIX=f"bench-first-{os.getpid()}",
        MATRIX_RUNTIME_RATE_LIMIT_RPM="0",
        MATRIX_RUNTIME_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        npm_config_cache=str(work / "npm-cache"),
    )
    env.pop("MATRIX_RUNTIME_PREFETCH_ALLOWED", None)  # the default: the catalog's servers
    with contextlib.ExitStack() as stack_:
        if stack == "postgres":
            env["REDIS_URL"] = REDIS_URL
            env["DATABASE_URL"] = stack_.enter_context(
                postgres_database(f"bench_first_{os.getpid()}")
            )
        elif stack != "sqlite":
            raise ValueError(f"unknown stack {stack!r}")
        spawn = stack_.enter_context(processes())
        port = free_port()
        argv = [sys.executable, "manage.py", "serve", "--port", str(port)]
        serve = spawn(argv, env, work / "serve.log")
        wait_until(
            lambda: http_ok(port) or serve.poll() is not None, SERVE_TIMEOUT, "serve to answer"
        )
        if serve.poll() is not None:
            raise RuntimeError(f"serve exited: {(work / 'serve.log').read_text()[-3000:]}")
        # /v1/ready answers 200 once a worker and a sandbox host beat
        wait_until(lambda: http_ok(port, "/v1/ready"), SERVE_TIMEOUT, "serve's worker and host")
        yield port, data


def cache_empty(data: Path) -> None:
    """Remove ``<data>/sandbox-cache`` (installed read-only) as if the data dir were new."""
    cache = data / "sandbox-cache"
    if cache.exists():
        for path in [cache, *cache.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(cache)


def npm_cache_empty(work: Path) -> None:
    shutil.rmtree(work / "npm-cache", ignore_errors=True)


def registry_answers() -> str:
    """The URL npm asks for the package, once it answered (else a RuntimeError)."""
    registry = subprocess.run(
        ["npm", "config", "get", "registry"], capture_output=True, text=True, check=True
    ).stdout.strip()
    url = f"{registry.rstrip('/')}/{PACKAGE.replace('/', '%2f')}"
    try:
        with urllib.request.urlopen(url, timeout=REGISTRY_TIMEOUT) as answer:  # noqa: S310
            answer.read(1)
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeError(f"the npm registry does not answer ({url}): {exc}") from exc
    return url


# --- one launch -----------------------------------------------------------------------------
class Api:
    """A keep-alive JSON client on loopback (the local-dev operator)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None


def events_until_ready(port: int, session_id: str) -> list[tuple[float, dict[str, Any]]]:
    """(perf_counter() on arrival, event) for each event of the session up to ``ready``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=READY_TIMEOUT)
    conn.request("GET", f"/v1/sandbox/sessions/{session_id}/events")
    response = conn.getresponse()
    seen: list[tuple[float, dict[str, Any]]] = []
    try:
        while line := response.readline():
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[6:])
            seen.append((time.perf_counter(), event))
            if event["step"] == "ready":
                return seen
            if event["status"] in ("error", "expired", "cancelled"):
                raise RuntimeError(f"session {session_id} ended: {event}")
    finally:
        conn.close()
    raise RuntimeError(f"the stream of {session_id} closed before ready")


def launch(api: Api) -> dict[str, Any]:
    """One launch: POST → ``ready`` (s) and what the install step reported."""
    started = time.perf_counter()
    status, body = api.request("POST", "/v1/sandbox/sessions", {"start_command": COMMAND})
    if status != 202:
        raise RuntimeError(f"POST answered {status}: {body}")
    seen = events_until_ready(api.port, body["session_id"])
    ready = seen[-1][0]
    installs = [(at, event) for at, event in seen if event["step"] == "install"]
    starts = [at for at, event in seen if event["step"] == "mcp_start"]
    done = next((event for _, event in installs if event["status"] == "ok"), None)
    api.request("DELETE", f"/v1/sandbox/sessions/{body['session_id']}")
    return {
        "post_to_ready_s": round(ready - started, 2),
        "install_events": len(installs),
        "progress_events": sum(1 for _, event in installs if event["status"] == "progress"),
        "install_s": (done.get("data") or {}).get("elapsed_s") if done else None,
        "fetched": (done.get("data") or {}).get("fetched") if done else None,
        "start_to_ready_s": round(ready - starts[0], 2) if starts else None,
        "load": round(os.getloadavg()[0], 2),
    }


def spread(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [run[key] for run in runs if run.get(key) is not None]
    if not values:
        return {}
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def measure(stack: str, cold: int, warm: int, cached: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-first-") as tmp,
        served(stack, Path(tmp)) as (
            port,
            data,
        ),
    ):
        work = Path(tmp)
        api = Api(port)
        modes: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": [], "cached": []}
        for _ in range(cold):
            cache_empty(data)
            npm_cache_empty(work)
            modes["cold"].append(launch(api))
            print(f"  {stack} cold: {modes['cold'][-1]}", flush=True)
        if warm and not cold:  # a warm npm cache needs one install before
            cache_empty(data)
            launch(api)
        for _ in range(warm):
            cache_empty(data)
            modes["warm"].append(launch(api))
            print(f"  {stack} warm: {modes['warm'][-1]}", flush=True)
        if cached and not (cold or warm):
            launch(api)
        for _ in range(cached):
            modes["cached"].append(launch(api))
            print(f"  {stack} cached: {modes['cached'][-1]}", flush=True)
        for mode, runs in modes.items():
            if mode != "cached" and any(run["install_events"] < 2 for run in runs):
                raise RuntimeError(f"a {mode} first launch had no install step: {runs}")
            if mode == "cached" and any(run["install_events"] for run in runs):
                raise RuntimeError(f"a cached launch installed: {runs}")
        return {
            mode: {
                "runs": runs,
                "post_to_ready_s": spread(runs, "post_to_ready_s"),
                "install_s": spread(runs, "install_s"),
                "start_to_ready_s": spread(runs, "start_to_ready_s"),
            }
            for mode, runs in modes.items()
            if runs
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=[*STACKS, "both"], default="sqlite")
    parser.add_argument("--cold", type=int, default=3, help="first launches, npm cache empty")
    parser.add_argument("--warm", type=int, default=3, help="first launches, npm cache warm")
    parser.add_argument("--cached", type=int, default=5, help="launches from the sandbox cache")
    parser.add_argument("--json", type=Path, help="write the results here (bench/run_all.py)")
    args = parser.parse_args()
    registry = registry_answers()
    npm = subprocess.run(["npm", "--version"], capture_output=True, text=True, check=True)
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    results: dict[str, Any] = {
        "command": COMMAND,
        "registry": registry,
        "npm": npm.stdout.strip(),
        "node": node.stdout.strip(),
        "stacks": {},
    }
    for stack in STACKS if args.stack == "both" else (args.stack,):
        print(f"first_launch: {stack} ...", flush=True)
        results["stacks"][stack] = measure(stack, args.cold, args.warm, args.cached)
        for mode, r in results["stacks"][stack].items():
            print(f"first_launch: {stack} {mode}: POST → ready {r['post_to_ready_s']} s")
    write_report(args.json, "first_launch", results)
    print(json.dumps(results["stacks"], indent=1))


if __name__ == "__main__":
    os.chdir(REPO)
    main()
