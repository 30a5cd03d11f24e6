"""Real multi-process deployments for the deployment and chaos tests.

Every role runs as the production command would run it, each in its own session (its
pid is its process group): web is ``daphne`` on a port of its own, worker and sandbox
host are ``manage.py worker`` / ``manage.py sandbox_host``. A ``RoundRobinProxy`` in
front of the web processes plays the load balancer. Every role's environment carries
a tag unique to the deployment, inherited by everything it starts, so ``leftovers()``
finds any process of the deployment through ``/proc`` whatever group or session it
moved to, and ``Deployment.close()`` kills whatever is left even when a test failed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from matrixcloud.lib.bus import free_port
from matrixcloud.lib.processes import signal_group
from tests.rr_proxy import RoundRobinProxy

REPO = Path(__file__).resolve().parent.parent
TAG_VARIABLE = "MXC_DEPLOYMENT_TAG"
TOKEN = "deployment-test-operator-token-7f3a9c"
READY_BOUND = 90.0  # two cores shared by many: a role may take a while to start
STOP_GRACE = 20.0
T = TypeVar("T")

# What every role of a test deployment shares (besides the database and the bus).
ROLE_SETTINGS = {
    "MATRIX_RUNTIME_API_TOKEN": TOKEN,
    "MATRIX_RUNTIME_RATE_LIMIT_RPM": "1000000",
    "MATRIX_RUNTIME_MAX_CONCURRENT_JOBS": "4",
    "MATRIX_RUNTIME_WORKERS": "2",
    "MATRIX_RUNTIME_WEB_THREADS": "8",
    "MATRIX_RUNTIME_EXTRA_JOB_MODULES": "tests.job_handlers",
    "PYTHONUNBUFFERED": "1",
}


def bounded(check: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(every)


# --- HTTP ----------------------------------------------------------------------------------
class Api:
    """JSON requests to one port on 127.0.0.1 with the operator token; one connection
    per request (``Connection: close``), so behind the proxy each one may reach another
    web process."""

    def __init__(self, port: int, token: str = TOKEN) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Connection": "close"}

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 30
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = dict(self.headers)
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw.decode(errors="replace")

    def get(self, path: str, timeout: float = 30) -> tuple[int, Any]:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body: Any, timeout: float = 30) -> tuple[int, Any]:
        return self.request("POST", path, body, timeout=timeout)

    def delete(self, path: str, timeout: float = 30) -> tuple[int, Any]:
        return self.request("DELETE", path, timeout=timeout)

    def healthy(self) -> bool:
        try:
            return self.get("/v1/health", timeout=2)[0] == 200
        except OSError:
            return False


# --- processes -----------------------------------------------------------------------------
@dataclass
class RoleProcess:
    """One role's process; ``start()`` may be called again after a kill (a restart)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    ready_text: str = ""
    port: int = 0
    stop_leader_only: bool = False
    proc: subprocess.Popen[bytes] | None = None
    offset: int = 0
    starts: int = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> RoleProcess:
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def recent(self) -> str:
        """The output of the current run only."""
        with self.log.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")

    def is_ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.recent()}")
        if self.port:
            return Api(self.port).healthy()
        return self.ready_text in self.recent()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the role's whole process group, as an OOM killer or a crash would."""
        assert self.proc is not None
        signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM (the group, or the leader for a worker), wait, then kill the rest."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if self.stop_leader_only:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
            else:
                signal_group(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_GRACE)
        signal_group(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        return self.proc.returncode


def tagged_pids(tag: str) -> list[int]:
    """Live pids whose environment carries ``tag`` (zombies and kernel threads skipped)."""
    needle = f"{TAG_VARIABLE}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_text()
            if stat.rpartition(")")[2].split()[0] != "Z":
                found.append(int(entry.name))
    return found


def describe(pids: Iterable[int]) -> list[str]:
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            out.append(f"{pid} (sid {os.getsid(pid)}): {cmd[:160]}")
    return out


@dataclass
class Deployment:
    """N web, N worker and N sandbox host processes sharing one database and bus."""

    env: dict[str, str]
    logs: Path
    webs: int = 2
    workers: int = 2
    hosts: int = 2
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    roles: dict[str, RoleProcess] = field(default_factory=dict)
    proxy: RoundRobinProxy | None = None

    def __post_init__(self) -> None:
        env = {**self.env, TAG_VARIABLE: self.tag}
        python = sys.executable
        for n in range(1, self.webs + 1):
            port = free_port()
            argv = [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
            self._add(f"web-{n}", [*argv, "matrixcloud.asgi:application"], env, port=port)
        for n in range(1, self.workers + 1):
            argv = [python, "manage.py", "worker"]
            self._add(f"worker-{n}", argv, env, ready_text="running.", stop_leader_only=True)
        for n in range(1, self.hosts + 1):
            argv = [python, "manage.py", "sandbox_host"]
            self._add(f"host-{n}", argv, env, ready_text="sandbox host listening")

    def _add(self, name: str, argv: list[str], env: dict[str, str], **kwargs: Any) -> None:
        self.roles[name] = RoleProcess(name, argv, env, self.logs / f"{name}.log", **kwargs)

    def named(self, prefix: str) -> list[RoleProcess]:
        return [role for name, role in self.roles.items() if name.startswith(prefix)]

    def start(self) -> Deployment:
        for role in self.roles.values():
            role.start()
        for role in self.roles.values():
            self.wait_ready(role)
        ports = [("127.0.0.1", role.port) for role in self.named("web-")]
        self.proxy = RoundRobinProxy(ports).start()
        return self

    def wait_ready(self, role: RoleProcess, timeout: float = READY_BOUND) -> float:
        """Seconds until ``role`` (started or restarted) serves."""
        started = time.monotonic()
        bounded(role.is_ready, timeout, f"{role.name} to be ready", 0.1)
        return time.monotonic() - started

    def api(self, name: str = "") -> Api:
        """Through the proxy, or straight to one web process."""
        if name:
            return Api(self.roles[name].port)
        assert self.proxy is not None
        return Api(self.proxy.port)

    def host_of(self, runner: str) -> RoleProcess:
        """The sandbox host whose reply channel is ``runner`` (it logs it when it starts)."""
        return next(role for role in self.named("host-") if runner and runner in role.recent())

    def leftovers(self) -> list[int]:
        return tagged_pids(self.tag)

    def close(self) -> list[str]:
        """Stop every role (web first, as ``serve`` does), then kill anything still
        carrying the tag; returns what had to be killed that way."""
        if self.proxy is not None:
            self.proxy.stop()
        for prefix in ("web-", "host-", "worker-"):
            for role in self.named(prefix):
                role.stop()
        left = self.leftovers()
        stray = describe(left)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return stray
