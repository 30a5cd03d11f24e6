"""``python -m matrixcloud.lib.supervisor --plan-fd N``: what ``serve`` becomes.

It starts the plan's bus and waits for it, starts the other roles, waits for the API's
``/v1/health``, says the service is up and supervises until SIGINT/SIGTERM, then stops
the roles in order and exits 0. Only the standard library is imported here (see
``plan.py``): the probes below speak just enough RESP and HTTP for a yes or a no.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Callable
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from matrixcloud.lib.supervisor import CrashLoop, StopRequest, Supervisor
from matrixcloud.lib.supervisor.plan import Plan, plan_from_fd

TICK = 0.1
PROBE_TIMEOUT = 0.5


class _Stopped(Exception):
    """A stop was requested while the service was still starting."""


class _Failed(Exception):
    """The run cannot go on; the message says why (as ``manage.py``'s CommandError)."""


def _resp(*words: str) -> bytes:
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        raw = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def bus_answers(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the Redis-compatible server at ``url`` accepts its password and PINGs."""
    where = urlsplit(url)
    auth = [unquote(where.username or ""), unquote(where.password or "")]
    commands = _resp("AUTH", *[word for word in auth if word]) if where.password else b""
    commands += _resp("PING")
    try:
        with socket.create_connection((where.hostname, where.port or 6379), timeout) as sock:
            sock.sendall(commands)
            replies = sock.makefile("rb")
            if where.password and not replies.readline().startswith(b"+OK"):
                return False
            return replies.readline().startswith(b"+PONG")
    except OSError:
        return False


def api_healthy(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``url``/v1/health answers 200."""
    where = urlsplit(url)
    host = where.hostname or "127.0.0.1"
    request = f"GET /v1/health HTTP/1.0\r\nHost: {where.netloc}\r\n\r\n".encode()
    try:
        with socket.create_connection((host, where.port or 80), timeout) as sock:
            sock.sendall(request)
            status = sock.makefile("rb").readline().split()
    except OSError:
        return False
    return status[1:2] == [b"200"]


class Run:
    """One supervised run of a plan, driven from the main thread."""

    def __init__(self, plan: Plan, supervisor: Supervisor, stop: StopRequest) -> None:
        self.plan, self.supervisor, self.stop = plan, supervisor, stop

    def start(self) -> None:
        plan, supervisor = self.plan, self.supervisor
        for line in plan.notes:
            supervisor.say(line)
        if plan.bus is not None:
            supervisor.start(plan.bus)
            self.wait(lambda: bus_answers(plan.bus_url), plan.bus_timeout, "the embedded bus")
            supervisor.say(plan.bus_said)
        for role in plan.roles:
            supervisor.start(role)
        started = time.monotonic()
        self.wait(lambda: api_healthy(plan.url), plan.health_timeout, f"the API at {plan.url}")
        supervisor.say(f"MatrixCloud is up at {plan.url} ({time.monotonic() - started:.1f} s)")

    def supervise(self) -> None:
        while not self.stop.requested:
            self.supervisor.tick()
            time.sleep(TICK)

    def wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Supervise until ``check()`` passes; raise when stopped or after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not check():
            if self.stop.requested:
                raise _Stopped
            if time.monotonic() > deadline:
                raise _Failed(f"{what} did not answer within {timeout:.0f} s")
            self.supervisor.tick()
            time.sleep(TICK)


def run(plan: Plan, out: BinaryIO) -> str | None:
    """Run ``plan`` until a stop; the reason it failed, or None after a clean stop."""
    supervisor = Supervisor(out=out)
    failure: str | None = None
    with supervisor.trap_signals() as stop:
        run = Run(plan, supervisor, stop)
        try:
            run.start()
            run.supervise()
        except _Stopped:
            pass
        except _Failed as exc:
            failure = str(exc)
        except CrashLoop as exc:
            failure = f"{exc}: giving up"
        finally:
            supervisor.stop(plan.stop_order)
    if failure is None and supervisor.forced:
        failure = "stopped by force: children were killed"
    if failure is None:
        supervisor.say("stopped")
    return failure


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a plan that manage.py serve wrote.")
    parser.add_argument("--plan-fd", type=int, required=True)
    plan = plan_from_fd(parser.parse_args().plan_fd)
    failure = run(plan, sys.stdout.buffer)
    if failure is not None:
        sys.stderr.write(f"CommandError: {failure}\n")  # as manage.py said it before the exec
        sys.exit(1)


if __name__ == "__main__":
    main()
