"""``manage.py serve``: the whole service on one machine, supervised, with a clean stop."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from argparse import ArgumentParser, ArgumentTypeError
from typing import Any, NoReturn

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
from matrixcloud.lib.supervisor import Role
from matrixcloud.lib.supervisor.plan import Plan, plan_to_fd
from runtimes.agent import credential_stored as runtime_credential_stored
from sandbox.enforcement import enforcement_summary

BUS_TIMEOUT = 10.0
HEALTH_TIMEOUT = 30.0
LISTEN_BACKLOG = 1024  # pending connections daphne accepts (the kernel caps it at somaxconn)
# The control plane hears "offline" first, while this installation still answers.
STOP_ORDER = ("cloud_heartbeat", "web", "sandbox_host", "worker", "bus")


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


def manage(command: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "django", command)


class Command(BaseCommand):
    """Run migrations, the embedded bus (when REDIS_URL is unset), web, worker and one
    sandbox host as supervised children; SIGINT/SIGTERM stop them in order and exit 0.

    The Django work done (checks, migrations, each role's command line and environment),
    the process becomes the standard-library supervisor (``matrixcloud.lib.supervisor``)
    with that plan, so the one process that lives as long as the service holds no Django.
    """

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
        exec_supervisor(self._plan(host, port))

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

    def _plan(self, host: str, port: int) -> Plan:
        # What sandboxes get here, said before any role starts.
        notes = [line.sentence() for line in enforcement_summary().lines]
        env = self._child_env(host, port)
        bus: Role | None = None
        bus_url_ = bus_said = ""
        if not settings.REDIS_URL:
            bus, bus_url_, bus_said = self._embedded_bus()
            env["REDIS_URL"] = bus_url_
        elif not bus_ping(settings.REDIS_URL, timeout=2.0):
            notes.append(
                f"warning: REDIS_URL ({redact_url(settings.REDIS_URL)}) does not answer; "
                "live events and sandboxes wait"
            )
        return Plan(
            notes=tuple(notes),
            bus=bus,
            bus_url=bus_url_,
            bus_said=bus_said,
            roles=self._roles(host, port, env),
            url=local_url(host, port),
            stop_order=STOP_ORDER,
            bus_timeout=BUS_TIMEOUT,
            health_timeout=HEALTH_TIMEOUT,
        )

    def _roles(self, host: str, port: int, env: dict[str, str]) -> tuple[Role, ...]:
        bind = "127.0.0.1" if host == "localhost" else host.strip("[]")
        # An endpoint string rather than -b/-p: Twisted's default listen backlog (50) drops
        # the SYNs of a connection storm (200 event streams at once), which the clients
        # then resend only after a second. Colons of an IPv6 address are escaped.
        interface = bind.replace(":", r"\:")
        endpoint = f"tcp:port={port}:interface={interface}:backlog={LISTEN_BACKLOG}"
        daphne = (sys.executable, "-m", "daphne", "-e", endpoint)
        roles = [
            Role("web", (*daphne, "matrixcloud.asgi:application"), env),
            # The worker drains gracefully on a signal to its process (its running jobs
            # end first); the handlers' subprocesses are in their own groups, and a
            # group-wide SIGINT would interrupt a worker that is still importing with a
            # KeyboardInterrupt traceback.
            Role("worker", manage("worker"), env, stop_leader_only=True),
            Role("sandbox_host", manage("sandbox_host"), env),
        ]
        if runtime_credential_stored():
            # This installation joined a control plane (manage.py join): keep it posted.
            roles.append(Role("cloud_heartbeat", manage("runtime_heartbeat"), env))
        return tuple(roles)

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

    def _embedded_bus(self) -> tuple[Role, str, str]:
        """The embedded bus with a new password: its role, its URL (password included),
        which the children get in their environment (readable by this user only), and
        what to say once it answers."""
        data_dir = settings.MATRIX_DATA_DIR / "bus"
        password = new_password()
        try:
            config = write_bus_config(data_dir, password=password)
        except OSError as exc:
            raise CommandError(f"cannot write the embedded bus's configuration: {exc}") from exc
        port = free_port()
        argv = bus_command(port=port, data_dir=data_dir, config=config)
        url = bus_url(port, password)
        return (
            Role("bus", tuple(argv)),
            url,
            f"embedded bus at {redact_url(url)} (password in {config})",
        )


def exec_supervisor(plan: Plan) -> NoReturn:
    """Become the supervisor (same pid, so whoever started ``serve`` signals it as before),
    with the plan in an inherited descriptor; Django's ~100 MiB go with the exec."""
    fd = plan_to_fd(plan)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "matrixcloud.lib.supervisor", "--plan-fd", str(fd)]
    os.execv(sys.executable, argv)  # noqa: S606  (our own interpreter, no shell)
