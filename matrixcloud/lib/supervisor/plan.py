"""What ``serve`` hands the supervisor across its ``exec``: the roles and how to start them.

``serve`` does its Django work (checks, migrations, the roles' command lines and
environments), writes a :class:`Plan` to an anonymous in-memory file and replaces itself
with ``python -m matrixcloud.lib.supervisor --plan-fd N``, which imports nothing but the
standard library: a supervisor that holds Django costs ~100 MiB for nothing. The plan
holds the bus password in the children's environments, so it travels in that file,
never in an argument or the supervisor's own environment (both readable in ``/proc``).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from dataclasses import dataclass
from typing import Any

from matrixcloud.lib.supervisor import Role


@dataclass(frozen=True)
class Plan:
    """A whole ``serve`` run: lines to say first, the bus (started and waited for before
    the rest, ``bus_url`` with its password), the other roles, the URL whose
    ``/v1/health`` says the service is up, and the order roles stop in."""

    notes: tuple[str, ...]
    bus: Role | None
    bus_url: str
    bus_said: str
    roles: tuple[Role, ...]
    url: str
    stop_order: tuple[str, ...]
    bus_timeout: float = 10.0
    health_timeout: float = 30.0


def _role_json(role: Role) -> dict[str, Any]:
    return {
        "name": role.name,
        "argv": list(role.argv),
        "env": dict(role.env) if role.env is not None else None,
        "stop_signal": int(role.stop_signal),
        "stop_leader_only": role.stop_leader_only,
    }


def _role(data: dict[str, Any]) -> Role:
    return Role(
        name=data["name"],
        argv=tuple(data["argv"]),
        env=data["env"],
        stop_signal=signal.Signals(data["stop_signal"]),
        stop_leader_only=data["stop_leader_only"],
    )


def plan_to_fd(plan: Plan) -> int:
    """An inheritable descriptor of an unnamed file holding ``plan``, at its start."""
    data = {
        **plan.__dict__,
        "bus": _role_json(plan.bus) if plan.bus else None,
        "roles": [_role_json(role) for role in plan.roles],
    }
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("serve-plan", 0)  # no MFD_CLOEXEC: it must cross the exec
    else:  # not Linux: a file already unlinked
        with tempfile.TemporaryFile() as file:
            fd = os.dup(file.fileno())
        os.set_inheritable(fd, True)
    payload = memoryview(json.dumps(data).encode())
    while payload:
        payload = payload[os.write(fd, payload) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def plan_from_fd(fd: int) -> Plan:
    """Read the plan ``plan_to_fd`` wrote, and close its descriptor."""
    with os.fdopen(fd, "rb") as file:
        data = json.loads(file.read())
    return Plan(
        notes=tuple(data["notes"]),
        bus=_role(data["bus"]) if data["bus"] else None,
        bus_url=data["bus_url"],
        bus_said=data["bus_said"],
        roles=tuple(_role(role) for role in data["roles"]),
        url=data["url"],
        stop_order=tuple(data["stop_order"]),
        bus_timeout=data["bus_timeout"],
        health_timeout=data["health_timeout"],
    )
