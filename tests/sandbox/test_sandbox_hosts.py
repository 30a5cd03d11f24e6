"""Sandbox hosts as processes: several side by side, SIGTERM, SIGKILL, lost start messages.

Each test starts its own hosts (``manage.py sandbox_host``) on the test database and
bus, so it knows which hosts can take ``sandbox.start``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from jobs import dispatchers, janitor
from jobs.models import Job
from sandbox.isolation import TIER_BUBBLEWRAP, isolation_tier
from tests.sandbox_processes import (
    end_all_sessions,
    events,
    no_session_processes,
    python_server,
    running_host,
    session_pids,
    start_host,
    steps,
    terminal,
    wait_step,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SESSIONS = "/v1/sandbox/sessions"
TINY = python_server("tiny_server.py")


@pytest.fixture(autouse=True)
def bubblewrap() -> None:
    if isolation_tier() != TIER_BUBBLEWRAP:
        pytest.fail("these tests run servers under bubblewrap, which is unavailable here")


def create(api: Any, **body: Any) -> dict[str, Any]:
    response = api.post(SESSIONS, {"start_command": TINY, **body})
    assert response.status_code == 202, response.content
    return dict(response.json())


def echo(api: Any, session_id: str, message: str) -> str:
    response = api.post(
        f"{SESSIONS}/{session_id}/tools/call", {"name": "echo", "arguments": {"message": message}}
    )
    assert response.status_code == 200, response.content
    return str(response.json()["result"]["content"][0]["text"])


def hang(session_id: str) -> Any:
    """A call that the tiny server never answers (from a thread: a client of its own)."""
    from django.test import Client

    body = {"name": "hang", "arguments": {}}
    url = f"{SESSIONS}/{session_id}/tools/call"
    return Client(REMOTE_ADDR="127.0.0.1").post(url, body, content_type="application/json")


def test_two_hosts_share_the_starts_and_each_answers_its_own_calls(
    api: Any, tmp_path: Path
) -> None:
    with running_host(tmp_path / "a.log"), running_host(tmp_path / "b.log"):
        try:
            created = [create(api) for _ in range(8)]
            for session in created:
                wait_step(session["job_id"], "ready")
            runners = {Job.objects.get(pk=s["job_id"]).runner for s in created}
            assert len(runners) == 2, runners  # the bus hands each start to one host
            for n, session in enumerate(created):
                assert echo(api, session["session_id"], f"m{n}") == f"m{n}"
            claims = [step for s in created for step, _ in steps(s["job_id"]) if step == "start"]
            assert len(claims) == len(created)  # every job claimed exactly once
        finally:
            end_all_sessions()


def test_a_call_longer_than_the_bus_clients_idle_timeout_is_answered(
    api: Any, tmp_path: Path
) -> None:
    # Redis clients time a socket out after 5 s by default: a web process blocked on a
    # reply (and a host or SSE stream idle on the bus) must wait as long as the call may.
    with running_host(
        tmp_path / "host.log",
        MATRIX_RUNTIME_SANDBOX_CALL_TIMEOUT="2",
        MATRIX_RUNTIME_SANDBOX_CALL_HARD_CAP="20",
    ):
        try:
            created = create(api)
            wait_step(created["job_id"], "ready")
            started = time.monotonic()
            response = api.post(
                f"{SESSIONS}/{created['session_id']}/tools/call",
                {"name": "progress", "arguments": {"steps": 13, "interval": 0.5}},
            )
            took = time.monotonic() - started
            assert response.status_code == 200, response.content
            assert response.json()["result"]["content"][0]["text"] == "done after 13 steps"
            assert took > 6.0  # it really outlived the 5 s default
        finally:
            end_all_sessions()


def test_sigterm_stops_every_session_says_why_and_leaves_no_process(
    api: Any, tmp_path: Path
) -> None:
    host = start_host(
        tmp_path / "host.log",
        MATRIX_RUNTIME_SANDBOX_CALL_TIMEOUT="60",
        MATRIX_RUNTIME_SANDBOX_CALL_HARD_CAP="60",
    ).ready()
    try:
        created = [create(api) for _ in range(3)]
        for session in created:
            wait_step(session["job_id"], "ready")
        assert all(session_pids(s["job_id"]) for s in created)
        hanging: list[Any] = []
        call = threading.Thread(target=lambda: hanging.append(hang(created[0]["session_id"])))
        call.start()
        time.sleep(0.5)  # the call reaches the server, which never answers it
        started = time.monotonic()
        assert host.stop() == 0, host.output()
        assert time.monotonic() - started < 5
        call.join(timeout=10)
        assert [(r.status_code, r.json()["error"]) for r in hanging] == [
            (409, "sandbox session has ended (cancelled)")
        ]
        for session in created:
            job = Job.objects.get(pk=session["job_id"])
            assert job.status == "cancelled"
            stop, cancel = events(job.pk)[-2:]
            assert (stop.step, stop.status) == ("stop", "cancelled")
            assert stop.message.startswith("Sandbox host stopped (sandbox_host-")
            assert (cancel.step, cancel.message) == ("cancel", "Job cancelled")
            no_session_processes(job.pk, timeout=1)
        assert "Traceback" not in host.output()
    finally:
        host.stop()


def test_a_sigkilled_hosts_servers_die_with_it_and_the_janitor_ends_its_jobs(
    api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = start_host(tmp_path / "host.log").ready()
    try:
        created = create(api)
        wait_step(created["job_id"], "ready")
        assert session_pids(created["job_id"])
        os.killpg(host.proc.pid, signal.SIGKILL)
        host.proc.wait(timeout=10)
        no_session_processes(created["job_id"])  # bwrap --die-with-parent
        later = timezone.now() + janitor.STALE_AFTER + timedelta(seconds=1)
        monkeypatch.setattr(janitor.timezone, "now", lambda: later)
        janitor.janitor_sweep()
        job = Job.objects.get(pk=created["job_id"])
        assert job.status == "error"
        assert "stopped heart-beating" in job.error
        tools = api.get(f"{SESSIONS}/{created['session_id']}/tools")
        assert tools.json()["error"] == "sandbox session has ended (error)"
    finally:
        host.stop()


def test_a_session_whose_start_message_was_lost_is_started_by_the_sweep(
    api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatchers, "dispatch", lambda job_id, kind: None)
    created = create(api)
    with running_host(tmp_path / "host.log"):
        try:
            wait_step(created["job_id"], "ready", timeout=20)
            assert echo(api, created["session_id"], "found") == "found"
        finally:
            end_all_sessions()
    assert terminal(created["job_id"]).status == "cancelled"
