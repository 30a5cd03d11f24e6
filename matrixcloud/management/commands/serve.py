"""``manage.py serve``: the whole service on one machine, supervised, with a clean stop."""

from __future__ import annotations

import gc
import ipaddress
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from argparse import ArgumentParser, ArgumentTypeError
from collections.abc import Callable
from typing import Any

from django import db
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from matrixcloud.lib.bus import (
    bus_command,
    bus_ping,
    bus_url,
    free_port,
    new_password,
    redact_url,
    write_bus_config,
)
from matrixcloud.lib.supervisor import CrashLoop, Role, StopRequest, Supervisor
from runtimes.agent import credential_stored as runtime_credential_stored
from sandbox.enforcement import enforcement_summary

BUS_TIMEOUT = 10.0
HEALTH_TIMEOUT = 30.0
TICK = 0.1
LISTEN_BACKLOG = 1024  # pending connections daphne accepts (the kernel caps it at somaxconn)
# The control plane hears "offline" first, while this installation still answers.
STOP_ORDER = ("cloud_heartbeat", "web", "sandbox_host", "worker", "bus")


class _Stopped(Exception):
    """A stop was requested while ``serve`` was still starting."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or "localhost") only listens on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def local_url(host: str, port: int) -> str:
    """The URL that reaches a server bound to ``host``:``port`` from this machine."""
    bare = host.strip("[]")
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
    bare = wildcard.get(bare, bare)
    if ":" in bare:
        bare = f"[{bare}]"
    return f"http://{bare}:{port}"


def port_number(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return port


def ensure_port_free(host: str, port: int) -> None:
    """Fail now, with a clear message, when the web port is taken."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bare, port))
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def health_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/health", timeout=0.5) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def manage(command: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "django", command)


class Command(BaseCommand):
    """Run migrations, the embedded bus (when REDIS_URL is unset), web, worker and one
    sandbox host as supervised children; SIGINT/SIGTERM stop them in order and exit 0."""

    help = (
        "Run the whole service on this machine: migrations, the embedded bus (without "
        "REDIS_URL), web (daphne), worker and a sandbox host, supervised."
    )
    # Checked in handle(), after the cheap refusals, so a refusal is immediate.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--host", help="address to listen on (default MATRIX_RUNTIME_HOST)")
        parser.add_argument(
            "--port", type=port_number, help="port to listen on (default MATRIX_RUNTIME_PORT)"
        )
        parser.add_argument(
            "--insecure",
            action="store_true",
            help="allow a non-loopback address without MATRIX_RUNTIME_API_TOKEN",
        )
        parser.add_argument("--no-migrate", action="store_true", help="skip migrations")

    def handle(self, *args: Any, **options: Any) -> None:
        host: str = options["host"] or settings.MATRIX_HOST
        port: int = options["port"] or settings.MATRIX_PORT
        self._check_exposure(host, insecure=options["insecure"])
        ensure_port_free(host, port)
        self.check()
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=max(options["verbosity"] - 1, 0))
        db.connections.close_all()
        supervisor = Supervisor(out=sys.stdout.buffer)
        with supervisor.trap_signals() as stop:
            try:
                self._run(supervisor, stop, host, port)
            except _Stopped:
                pass
            except CrashLoop as exc:
                raise CommandError(f"{exc}: giving up") from exc
            finally:
                supervisor.stop(STOP_ORDER)
        if supervisor.forced:
            raise CommandError("stopped by force: children were killed")
        supervisor.say("stopped")
        gc.freeze()  # skips the interpreter's final collection: ~0.5 s of exit with this heap

    def _check_exposure(self, host: str, *, insecure: bool) -> None:
        if is_loopback(host) or settings.MATRIX_API_TOKEN:
            return
        if insecure:
            self.stderr.write(f"warning: listening on {host} without an API token (--insecure)")
            return
        raise CommandError(
            f"refusing to listen on {host} without an API token: anyone who can reach it "
            "could run commands. Set MATRIX_RUNTIME_API_TOKEN, listen on 127.0.0.1, or pass "
            "--insecure."
        )

    def _run(self, supervisor: Supervisor, stop: StopRequest, host: str, port: int) -> None:
        for line in enforcement_summary().lines:  # what sandboxes get here, before any start
            supervisor.say(line.sentence())
        env = self._child_env(host, port)
        if not settings.REDIS_URL:
            env["REDIS_URL"] = self._start_bus(supervisor, stop)
        elif not bus_ping(settings.REDIS_URL, timeout=2.0):
            supervisor.say(
                f"warning: REDIS_URL ({redact_url(settings.REDIS_URL)}) does not answer; "
                "live events and sandboxes wait"
            )
        bind = "127.0.0.1" if host == "localhost" else host.strip("[]")
        # An endpoint string rather than -b/-p: Twisted's default listen backlog (50) drops
        # the SYNs of a connection storm (200 event streams at once), which the clients
        # then resend only after a second. Colons of an IPv6 address are escaped.
        interface = bind.replace(":", r"\:")
        endpoint = f"tcp:port={port}:interface={interface}:backlog={LISTEN_BACKLOG}"
        daphne = (sys.executable, "-m", "daphne", "-e", endpoint)
        supervisor.start(Role("web", (*daphne, "matrixcloud.asgi:application"), env))
        # django-q2 stops gracefully on a signal to the cluster's main process, which drains
        # the pool; its sentinel resets SIGTERM to the default, so a group-wide SIGTERM
        # would kill the pool mid-task (and a group-wide SIGINT interrupts a worker that is
        # still importing with a KeyboardInterrupt traceback).
        supervisor.start(Role("worker", manage("worker"), env, stop_leader_only=True))
        supervisor.start(Role("sandbox_host", manage("sandbox_host"), env))
        if runtime_credential_stored():
            # This installation joined a control plane (manage.py join): keep it posted.
            supervisor.start(Role("cloud_heartbeat", manage("runtime_heartbeat"), env))
        url, started = local_url(host, port), time.monotonic()
        self._wait(supervisor, stop, lambda: health_ok(url), HEALTH_TIMEOUT, f"the API at {url}")
        supervisor.say(f"MatrixCloud is up at {url} ({time.monotonic() - started:.1f} s)")
        while not stop.requested:
            supervisor.tick()
            time.sleep(TICK)

    def _child_env(self, host: str, port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "matrixcloud.settings"),
            MATRIX_RUNTIME_DATA_DIR=str(settings.MATRIX_DATA_DIR),
            MATRIX_RUNTIME_HOST=host,
            MATRIX_RUNTIME_PORT=str(port),
            PYTHONUNBUFFERED="1",
        )
        return env

    def _start_bus(self, supervisor: Supervisor, stop: StopRequest) -> str:
        """Start the embedded bus with a new password; return its URL (password included),
        which the children get in their environment (readable by this user only)."""
        data_dir = settings.MATRIX_DATA_DIR / "bus"
        password = new_password()
        try:
            config = write_bus_config(data_dir, password=password)
        except OSError as exc:
            raise CommandError(f"cannot write the embedded bus's configuration: {exc}") from exc
        port = free_port()
        argv = bus_command(port=port, data_dir=data_dir, config=config)
        supervisor.start(Role("bus", tuple(argv)))
        url = bus_url(port, password)
        self._wait(supervisor, stop, lambda: bus_ping(url, 0.5), BUS_TIMEOUT, "the embedded bus")
        supervisor.say(f"embedded bus at {redact_url(url)} (password in {config})")
        return url

    def _wait(
        self,
        supervisor: Supervisor,
        stop: StopRequest,
        check: Callable[[], bool],
        timeout: float,
        what: str,
    ) -> None:
        """Supervise until ``check()`` passes; raise when stopped or after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not check():
            if stop.requested:
                raise _Stopped
            if time.monotonic() > deadline:
                raise CommandError(f"{what} did not answer within {timeout:.0f} s")
            supervisor.tick()
            time.sleep(TICK)
