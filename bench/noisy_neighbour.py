"""Noisy neighbour: one tenant's tool calls while another tenant's sandbox attacks the host.

Two workspaces (two signed-up owners) on a fresh installation (daphne and one sandbox
host). The victim runs server-everything and calls ``echo`` on one keep-alive
connection; the attacker runs tests/fixtures/servers/hostile_server.py, whose
``attack`` starts a fork bomb of CPU-spinning children, a memory bomb and a disk fill
of its scratch dir. The victim's calls are measured idle, then under attack; the
report also gives the host's free-disk drop and what the attacker's sandbox ended as.

    .venv/bin/python bench/noisy_neighbour.py [--stack sqlite|postgres|both] [--calls 500]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import STACKS, summary, write_report
from bench.sandbox import EVERYTHING, FIXTURES, deployment

HOSTILE = ["python3", str(FIXTURES / "servers" / "hostile_server.py")]
READY_TIMEOUT = 60.0
ATTACK_SETTLE = 4.0  # seconds the attack runs before the victim's calls are measured


class Tenant:
    """A signed-up owner with a keep-alive connection."""

    def __init__(self, port: int, name: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        status, body = self.request(
            "POST",
            "/v1/auth/signup",
            {"name": name, "email": f"{name}@bench.test", "password": "bench-password-1"},
            token=None,
        )
        assert status == 201, body
        self.token = body["token"]

    def request(
        self, method: str, path: str, body: Any = None, *, token: str | None = ""
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token or self.token}"
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None

    def start(self, argv: list[str]) -> str:
        status, body = self.request(
            "POST", "/v1/sandbox/sessions", {"start_command": " ".join(argv), "ttl_seconds": 600}
        )
        assert status == 202, body
        session_id = str(body["session_id"])
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            _, state = self.request("GET", f"/v1/sandbox/sessions/{session_id}")
            if state.get("ready"):
                return session_id
            if state.get("status") not in ("queued", "running"):
                raise RuntimeError(f"session {session_id} ended: {state}")
            time.sleep(0.05)
        raise RuntimeError(f"session {session_id} was not ready in {READY_TIMEOUT} s")

    def call(self, session_id: str, name: str, arguments: dict[str, Any]) -> tuple[int, Any]:
        path = f"/v1/sandbox/sessions/{session_id}/tools/call"
        return self.request("POST", path, {"name": name, "arguments": arguments})


def timed_calls(tenant: Tenant, session_id: str, count: int) -> list[float]:
    times = []
    for n in range(count):
        started = time.perf_counter()
        status, body = tenant.call(session_id, "echo", {"message": f"m{n}"})
        times.append((time.perf_counter() - started) * 1000)
        assert status == 200, body
    return times


def measure(port: int, data_dir: Path, calls: int) -> dict[str, Any]:
    victim, attacker = Tenant(port, "victim"), Tenant(port, "attacker")
    victim_session = victim.start(EVERYTHING)
    hostile_session = attacker.start(HOSTILE)
    timed_calls(victim, victim_session, 50)  # warm up
    idle = timed_calls(victim, victim_session, calls)
    free_before = shutil.disk_usage(data_dir).free
    status, body = attacker.call(hostile_session, "attack", {})
    assert status == 200, body
    time.sleep(ATTACK_SETTLE)
    attacked = timed_calls(victim, victim_session, calls)
    free_drop = free_before - shutil.disk_usage(data_dir).free
    _, hostile = attacker.request("GET", f"/v1/sandbox/sessions/{hostile_session}")
    scratch = shutil.disk_usage(data_dir / "mcp" / str(hostile["job_id"]))
    attacker.request("DELETE", f"/v1/sandbox/sessions/{hostile_session}")
    victim.request("DELETE", f"/v1/sandbox/sessions/{victim_session}")
    idle_s, attacked_s = summary(idle), summary(attacked)
    return {
        "idle_ms": idle_s,
        "under_attack_ms": attacked_s,
        "p95_ratio": round(attacked_s["p95"] / idle_s["p95"], 2),
        "host_free_disk_drop_mib": round(free_drop / 1024 / 1024, 1),
        "attacker_scratch_used_mib": round(scratch.used / 1024 / 1024, 1),
        "attacker_scratch_size_mib": round(scratch.total / 1024 / 1024, 1),
        "attacker_status": (hostile or {}).get("status"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=(*STACKS, "both"), default="sqlite")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M %Z')}, load average {os.getloadavg()}", flush=True)
    reports: dict[str, Any] = {}
    for stack in STACKS if args.stack == "both" else (args.stack,):
        data_dir = Path(tempfile.mkdtemp(prefix=f"bench-noisy-{stack}-"))
        try:
            with deployment(stack, data_dir) as (port, _env):
                reports[stack] = measure(port, data_dir, args.calls)
                print(json.dumps({stack: reports[stack]}), flush=True)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"# load average after: {os.getloadavg()}", flush=True)
    write_report(args.json, "noisy_neighbour", reports)


if __name__ == "__main__":
    main()
