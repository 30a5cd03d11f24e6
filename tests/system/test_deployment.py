"""A multi-process deployment on one machine: 2 web, 2 workers, 2 sandbox hosts.

The web processes (daphne) sit behind a round-robin proxy (tests/rr_proxy.py), the
load balancer of a real deployment; workers and hosts share the test database and bus,
as they would share PostgreSQL and Redis. What one web process accepted, the other
serves: jobs and their event streams (with ``Last-Event-ID`` replay), sandbox sessions
(tools, calls, events). A sandbox host that is SIGKILLed takes only its own sessions
with it: a worker's janitor ends them with an error that says why, calls to them answer
409 naming the ended session, and the other host's sessions keep serving throughout.
Runs on both stacks (a file-backed SQLite database or PostgreSQL; the test bus).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from jobs import janitor
from jobs.models import Job
from matrixcloud.lib.bus import free_port
from sandbox.isolation import TIER_BUBBLEWRAP, isolation_tier
from tests.deployment import (
    REPO,
    ROLE_SETTINGS,
    TAG_VARIABLE,
    TOKEN,
    Api,
    Deployment,
    bounded,
    describe,
    tagged_pids,
)
from tests.matrixcloud.test_serve import child_env
from tests.sandbox_processes import host_env, python_server, session_pids, start_host, wait_step
from tests.sse_client import Stream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.django_db(transaction=True)]

SESSIONS = "/v1/sandbox/sessions"
TINY = python_server("tiny_server.py")
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    if isolation_tier() != TIER_BUBBLEWRAP:
        pytest.fail("the deployment test runs sandbox servers under bubblewrap, unavailable here")
    running = Deployment(env={**host_env(), **ROLE_SETTINGS}, logs=tmp_path)
    try:
        yield running.start()
    finally:
        stray = running.close()
        assert not stray, f"processes outlived their roles' stop: {stray}"


def create_job(api: Api, message: str) -> str:
    status, body = api.post("/v1/jobs", {"type": "test.echo", "payload": {"message": message}})
    assert status == 202, body
    return str(body["job_id"])


def has_status(api: Api, job_id: str, status: str) -> bool:
    return job_status(api, job_id) == status


def no_pids(job_id: str) -> bool:
    return not session_pids(job_id)


def tools_refused(api: Api, session_id: str) -> bool:
    return api.get(f"{SESSIONS}/{session_id}/tools")[0] == 409


def job_status(api: Api, job_id: str) -> str:
    status, body = api.get(f"/v1/jobs/{job_id}")
    assert status == 200, body
    return str(body["status"])


def create_session(api: Api) -> dict[str, Any]:
    status, body = api.post(SESSIONS, {"start_command": TINY})
    assert status == 202, body
    return dict(body)


def session_ready(api: Api, session_id: str) -> bool:
    status, body = api.get(f"{SESSIONS}/{session_id}")
    assert status == 200, body
    assert body["status"] in ("queued", "running"), body
    return bool(body["ready"])


def echo(api: Api, session_id: str, message: str) -> tuple[int, Any]:
    body = {"name": "echo", "arguments": {"message": message}}
    return api.post(f"{SESSIONS}/{session_id}/tools/call", body)


def echoes(api: Api, session_id: str, message: str) -> bool:
    status, body = echo(api, session_id, message)
    assert status == 200, body
    return bool(body["result"]["content"][0]["text"] == message)


def blocks(port: int, path: str, until: str, headers: dict[str, str] | None = None) -> list[Any]:
    """The data of an event stream's blocks up to the first whose step is ``until``."""
    seen = []
    with Stream(port, path, headers={**AUTH, **(headers or {})}, timeout=30) as stream:
        assert stream.status == 200, stream.json()
        for block in stream.blocks():
            if block.data is None:
                continue
            seen.append((block.id, block.data))
            if block.data.get("step") == until:
                break
    return seen


def test_two_of_each_role_behind_a_round_robin_proxy(deployment: Deployment) -> None:
    web_a, web_b, lb = deployment.api("web-1"), deployment.api("web-2"), deployment.api()

    # Jobs: created through the balancer, run by either worker, read through either web.
    job_ids = [create_job(lb, f"job {n}") for n in range(6)]
    for job_id in job_ids:
        bounded(partial(has_status, lb, job_id, "complete"), 60, f"{job_id} to complete")
    assert deployment.proxy is not None
    assert set(deployment.proxy.connections) == {
        ("127.0.0.1", r.port) for r in deployment.named("web-")
    }
    runners = {Job.objects.get(pk=job_id).runner for job_id in job_ids}
    assert all(runner.startswith("worker:") for runner in runners), runners

    # A job created through web 1 streams from web 2, and replays after Last-Event-ID.
    job_id = create_job(web_a, "streamed")
    full = blocks(web_b.port, f"/v1/jobs/{job_id}/events", until="complete")
    assert [event_id for event_id, _ in full] == list(range(1, len(full) + 1))
    assert full[-1][1]["status"] == "complete"
    resumed = blocks(web_b.port, f"/v1/jobs/{job_id}/events", "complete", {"Last-Event-ID": "2"})
    assert resumed == full[2:]

    # Sandboxes: created through web 1 until both hosts hold one, used through web 2.
    sessions: list[dict[str, Any]] = []
    hosts: dict[str, str] = {}
    for _ in range(8):
        sessions.append(create_session(web_a))
        for session in sessions:
            bounded(partial(session_ready, web_b, session["session_id"]), 90, "a session")
            runner = Job.objects.get(pk=session["job_id"]).runner
            hosts[session["session_id"]] = deployment.host_of(runner).name
        if len(set(hosts.values())) == 2:
            break
    assert set(hosts.values()) == {"host-1", "host-2"}, hosts
    for n, session in enumerate(sessions):
        assert echoes(web_b, session["session_id"], f"via web 2: {n}")
        assert echoes(lb, session["session_id"], f"via the balancer: {n}")
        status, tools = web_b.get(f"{SESSIONS}/{session['session_id']}/tools")
        assert status == 200, tools
        assert "echo" in [tool["name"] for tool in tools["tools"]]
    first = sessions[0]
    streamed = blocks(web_b.port, f"{SESSIONS}/{first['session_id']}/events", until="ready")
    assert streamed[-1][1]["step"] == "ready"

    # Kill one host, process group and all: only its sessions end, with a clear error.
    victim = deployment.roles[hosts[first["session_id"]]]
    mine = [s for s in sessions if hosts[s["session_id"]] == victim.name]
    theirs = [s for s in sessions if hosts[s["session_id"]] != victim.name]
    victim.kill()
    killed = time.monotonic()
    for session in mine:
        bounded(partial(no_pids, session["job_id"]), 10, "the host's servers to die")
    while time.monotonic() - killed < 60:
        for session in theirs:  # the survivor serves while the janitor is still waiting
            assert echoes(lb, session["session_id"], "still here")
        status, body = lb.get(f"{SESSIONS}/{mine[0]['session_id']}/tools")
        if status == 409:
            break
        assert status == 200, body  # the row still says running until the janitor ends it
        time.sleep(0.5)
    ended_after = time.monotonic() - killed
    print(f"\nthe janitor ended the dead host's sessions {ended_after:.1f} s after the kill")
    for session in mine:
        bounded(partial(tools_refused, lb, session["session_id"]), 30, "the session to end")
        status, body = lb.get(f"{SESSIONS}/{session['session_id']}/tools")
        assert (status, body) == (
            409,
            {"error": "sandbox session has ended (error)", "status": 409},
        )
        status, body = echo(lb, session["session_id"], "anyone there?")
        assert (status, body["error"]) == (409, "sandbox session has ended (error)")
        status, body = lb.get(f"{SESSIONS}/{session['session_id']}")
        assert body["status"] == "error"
        assert "stopped heart-beating" in body["error"], body
    for session in theirs:
        assert echoes(lb, session["session_id"], "after the janitor")

    # New sessions all go to the host that is left, and work.
    fresh = create_session(lb)
    bounded(lambda: session_ready(lb, fresh["session_id"]), 90, "a session on the survivor")
    runner = Job.objects.get(pk=fresh["job_id"]).runner
    assert deployment.host_of(runner).name != victim.name
    assert echoes(web_a, fresh["session_id"], "fresh")
    for session in [*theirs, fresh]:
        assert lb.delete(f"{SESSIONS}/{session['session_id']}")[0] == 200


def all_roles(pids: list[int]) -> bool:
    """Whether ``pids`` hold each of serve's roles: web, worker and sandbox host."""
    commands = " | ".join(describe(pids))
    return all(role in commands for role in ("daphne", "django worker", "django sandbox_host"))


def test_a_sigkilled_serve_leaves_no_role_running(tmp_path: Path) -> None:
    """``serve`` is SIGKILLed (the OOM killer, ``kill -9``): every role it started is in
    a session of its own, out of reach of a group kill, yet none may run on orphaned."""
    tag = uuid.uuid4().hex
    port = free_port()
    env = child_env(tmp_path / "data", **{TAG_VARIABLE: tag})
    with (tmp_path / "serve.log").open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        bounded(Api(port).healthy, 90, "serve to answer")
        roles = bounded(lambda: pids if all_roles(pids := tagged_pids(tag)) else [], 30, "roles")
        serve.kill()
        serve.wait(timeout=10)
        with contextlib.suppress(AssertionError):
            bounded(lambda: not tagged_pids(tag), 30, "the roles to stop", 0.2)
        assert not tagged_pids(tag), (describe(roles), describe(tagged_pids(tag)))
    finally:
        serve.kill()
        serve.wait(timeout=10)
        for pid in tagged_pids(tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_the_janitor_ends_a_dead_local_hosts_sessions_before_the_stale_threshold(
    api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host on this machine whose process is gone needs only ``DEAD_RUNNER_AFTER`` of
    silence (as a dead worker does), not the full ``STALE_AFTER``: its sessions end
    within seconds instead of ~25 s (the deployment test above measures it)."""
    host = start_host(tmp_path / "host.log").ready()
    try:
        response = api.post(SESSIONS, {"start_command": TINY})
        assert response.status_code == 202, response.content
        job_id = response.json()["job_id"]
        wait_step(job_id, "ready")
        os.killpg(host.proc.pid, signal.SIGKILL)
        host.proc.wait(timeout=10)
        later = timezone.now() + janitor.DEAD_RUNNER_AFTER + timedelta(seconds=1)
        assert later - timezone.now() < janitor.STALE_AFTER
        monkeypatch.setattr(janitor.timezone, "now", lambda: later)
        assert janitor.janitor_sweep().orphaned == 1
        job = Job.objects.get(pk=job_id)
        assert job.status == "error"
        assert f"({job.runner}) stopped heart-beating" in job.error
    finally:
        host.stop()
