"""Sandbox sessions end to end under one real host: real servers, real isolation.

The API is called in this process (its rows commit for real, so the host sees them);
the host is ``manage.py sandbox_host`` on the same database and bus, running each
server under bubblewrap with the fixtures bound read-only. Reference servers (npm
everything, filesystem, memory; the Python SDK server) go create → ready → tools →
call → delete with the events in order; adversarial ones (tests/fixtures/servers) must
leave the host healthy and answer clearly. The host's bounds are short here (start
15 s, call 1.5 s without progress, 3 s in all: see tests/sandbox_processes.py).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jobs.models import Job, JobEvent
from sandbox.bubblewrap import prefetch_cache_dir
from sandbox.isolation import TIER_BUBBLEWRAP, isolation_tier
from sandbox.models import SandboxSession, ToolCall, ToolFingerprint, command_key
from sandbox.policy import command_validate
from tests.jobs.test_jobs_worker import wait_for
from tests.sandbox_processes import (
    NPM,
    Host,
    end_all_sessions,
    events,
    needs_npm,
    no_session_processes,
    npm_server,
    python_server,
    running_host,
    scratch_dir,
    steps,
    terminal,
    wait_step,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SESSIONS = "/v1/sandbox/sessions"
START_STEPS = [
    ("queue", "queued"),
    ("start", "running"),
    ("validate", "ok"),
    ("sandbox", "start"),
    ("mcp_start", "start"),
    ("mcp_initialize", "ok"),
    ("tools_list", "ok"),
    ("ready", "ok"),
]


@pytest.fixture(scope="module")
def host(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    if isolation_tier() != TIER_BUBBLEWRAP:
        pytest.fail("these tests run servers under bubblewrap, which is unavailable here")
    with running_host(tmp_path_factory.mktemp("host") / "host.log") as running:
        yield running


@pytest.fixture(autouse=True)
def clean(host: Host) -> Iterator[None]:
    yield
    end_all_sessions()


def create(api: Any, command: str, **body: Any) -> dict[str, Any]:
    response = api.post(SESSIONS, {"start_command": command, **body})
    assert response.status_code == 202, response.content
    return dict(response.json())


def ready(api: Any, command: str, timeout: float = 20, **body: Any) -> dict[str, Any]:
    created = create(api, command, **body)
    wait_step(created["job_id"], "ready", timeout)
    return created


def call(api: Any, session_id: str, name: str, **arguments: Any) -> Any:
    body = {"name": name, "arguments": arguments}
    return api.post(f"{SESSIONS}/{session_id}/tools/call", body)


def text(response: Any) -> str:
    assert response.status_code == 200, response.content
    return "".join(block.get("text", "") for block in response.json()["result"]["content"])


def delete(api: Any, created: dict[str, Any]) -> None:
    response = api.delete(f"{SESSIONS}/{created['session_id']}")
    assert response.json() == {"ok": True, "status": "cancelled"}
    no_session_processes(created["job_id"])
    assert not scratch_dir(created["job_id"]).exists()


# --- reference servers ----------------------------------------------------------------------


@needs_npm
def test_server_everything_from_create_to_delete(api: Any) -> None:
    created = ready(api, npm_server("server-everything", "stdio"))
    job_id, session_id = created["job_id"], created["session_id"]
    assert steps(job_id) == START_STEPS
    seen = events(job_id)
    by_step = {event.step: event for event in seen}
    assert by_step["validate"].message == "Command accepted"
    assert by_step["validate"].data == {"program": "node"}
    assert by_step["sandbox"].data == {"work_dir": str(scratch_dir(job_id))}
    assert by_step["tools_list"].message == f"Found {by_step['tools_list'].data['count']} tools"
    assert by_step["ready"].message == "Sandbox ready"
    # stderr lines are pumped to events asynchronously: the line may follow `ready`.
    wait_for(
        lambda: any(e.step == "log" and "Starting default" in e.message for e in events(job_id)),
        10,
        "the server's stderr line as a log event",
    )

    tools = api.get(f"{SESSIONS}/{session_id}/tools").json()["tools"]
    assert len(tools) == by_step["tools_list"].data["count"]
    echo = next(tool for tool in tools if tool["name"] == "echo")
    assert echo["input_schema"]["properties"]["message"]["type"] == "string"
    snapshot = api.get(f"{SESSIONS}/{session_id}").json()
    assert (snapshot["status"], snapshot["result"]) == ("running", {"tools": tools})
    assert snapshot["server"]["server"]["name"] == "mcp-servers/everything"

    assert text(call(api, session_id, "echo", message="hi", api_key="sk")) == "Echo: hi"
    missing = call(api, session_id, "no_such_tool")
    assert missing.status_code == 200
    assert missing.json()["result"]["isError"] is True
    delete(api, created)
    assert steps(job_id)[-1] == ("cancel", "cancelled")
    wait_for(lambda: ToolCall.objects.count() == 2, 5, "the call rows")
    calls = list(ToolCall.objects.order_by("started_at"))
    assert [(c.tool, c.outcome) for c in calls] == [("echo", "ok"), ("no_such_tool", "tool_error")]
    assert calls[0].arguments == {"message": "hi", "api_key": "[redacted]"}
    assert calls[0].result_bytes > 0
    assert api.get(f"{SESSIONS}/{session_id}").json()["status"] == "cancelled"


@needs_npm
def test_the_catalogs_npx_command_starts_offline_from_the_prefetch_cache(api: Any) -> None:
    # The cache laid out as `sandbox_prefetch` leaves it (one npm prefix), from the fixtures;
    # sandboxes have no network, so `npx -y` itself could fetch nothing.
    cache = prefetch_cache_dir() / "npm" / "node_modules"
    shutil.copytree(NPM.parent, cache, symlinks=True, dirs_exist_ok=True)
    try:
        created = ready(api, "npx -y @modelcontextprotocol/server-everything", timeout=30)
        started = next(e for e in events(created["job_id"]) if e.step == "mcp_start")
        entry = (cache / "@modelcontextprotocol/server-everything/dist/index.js").resolve()
        assert started.data == {"from_cache": ["node", str(entry)]}
        assert text(call(api, created["session_id"], "echo", message="offline")) == (
            "Echo: offline"
        )
        delete(api, created)
    finally:
        shutil.rmtree(prefetch_cache_dir())


@needs_npm
def test_server_filesystem_works_in_its_scratch_dir(api: Any) -> None:
    created = ready(api, npm_server("server-filesystem", "."))
    session_id = created["session_id"]
    allowed = text(call(api, session_id, "list_allowed_directories"))
    assert str(scratch_dir(created["job_id"])) in allowed
    written = call(api, session_id, "write_file", path="notes.txt", content="hello sandbox")
    assert "Successfully wrote" in text(written)
    assert text(call(api, session_id, "read_text_file", path="notes.txt")) == "hello sandbox"
    outside = call(api, session_id, "read_text_file", path="/etc/hostname")
    assert outside.json()["result"]["isError"] is True  # outside the allowed directory
    delete(api, created)


@needs_npm
def test_server_memory_keeps_its_graph_in_the_sandbox(api: Any) -> None:
    created = ready(api, npm_server("server-memory"), env={"MEMORY_FILE_PATH": "/tmp/memory.jsonl"})
    session_id = created["session_id"]
    entity = {"name": "Ada", "entityType": "person", "observations": ["wrote programs"]}
    assert call(api, session_id, "create_entities", entities=[entity]).status_code == 200
    graph = json.loads(text(call(api, session_id, "read_graph")))
    assert graph["entities"] == [entity]
    delete(api, created)


def test_python_sdk_server_calls_progress_and_tool_errors(api: Any) -> None:
    created = ready(api, python_server("py_server.py"), timeout=30)
    session_id = created["session_id"]
    assert text(call(api, session_id, "add", a=2, b=3)) == "5"
    failed = call(api, session_id, "fail")
    assert failed.status_code == 200
    assert failed.json()["result"]["isError"] is True
    # 2 s of work, progress every 0.1 s: past the 1.5 s call timeout, within the 3 s cap.
    assert text(call(api, session_id, "count", steps=20)) != ""
    delete(api, created)


def test_a_call_sent_the_moment_the_session_is_ready_is_answered(api: Any) -> None:
    # The host commits `ready` from its database thread; its event loop must already
    # treat the session as ready by then (it used to mark it after: 409 "not ready").
    for n in range(5):
        session_id = create(api, python_server("tiny_server.py"))["session_id"]
        started = SandboxSession.objects.filter(pk=session_id, ready_at__isnull=False)
        wait_for(started.exists, 20, "ready_at", every=0.002)
        assert text(call(api, session_id, "echo", message=f"m{n}")) == f"m{n}"


def test_concurrent_calls_on_one_session_are_all_answered(api: Any) -> None:
    created = ready(api, python_server("tiny_server.py"))
    answers: list[str] = []

    def one(n: int) -> None:
        from django.test import Client

        body = {"name": "echo", "arguments": {"message": f"n{n}"}}
        client = Client(REMOTE_ADDR="127.0.0.1")
        response = client.post(
            f"{SESSIONS}/{created['session_id']}/tools/call", body, content_type="application/json"
        )
        answers.append(text(response))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(answers) == sorted(f"n{n}" for n in range(8))


# --- adversarial servers ----------------------------------------------------------------------


def test_a_server_that_exits_at_start_fails_with_its_stderr(api: Any) -> None:
    created = create(api, python_server("exit_at_start.py"))
    job = terminal(created["job_id"])
    assert job.status == "error"
    assert job.error.startswith("mcp handshake failed: mcp initialize: server exited (code 3)")
    assert job.error.endswith("(stderr: fatal: cannot start (missing configuration))")
    failed = [e for e in events(job.pk) if e.step == "mcp_initialize"]
    assert failed[0].status == "error"
    assert failed[0].data == {"stderr": "fatal: cannot start (missing configuration)"}
    assert steps(job.pk)[-1] == ("error", "error")
    tools = api.get(f"{SESSIONS}/{created['session_id']}/tools")
    assert tools.json()["error"] == "sandbox session has ended (error)"
    no_session_processes(job.pk)


def test_a_server_that_never_answers_calls_times_out_and_stays_usable(api: Any) -> None:
    created = ready(api, python_server("silent_calls.py"))
    started = time.monotonic()
    response = call(api, created["session_id"], "echo", message="hi")
    assert time.monotonic() - started < 5
    assert (response.status_code, response.json()["error"]) == (
        409,
        "mcp tools/call timed out after 1.5 s",
    )
    record = wait_for(lambda: ToolCall.objects.first(), 5, "the call row")
    assert record.outcome == "timeout"
    assert api.get(f"{SESSIONS}/{created['session_id']}/tools").status_code == 200
    assert Job.objects.get(pk=created["job_id"]).status == "running"


def test_garbage_on_stdout_does_not_break_the_session(api: Any) -> None:
    created = ready(api, python_server("garbage_stdout.py"))
    for n in range(3):
        assert text(call(api, created["session_id"], "echo", message=f"t{n}")) == f"t{n}"


def test_a_huge_paged_tool_list_is_listed_whole(api: Any) -> None:
    created = ready(api, python_server("huge_tools.py"), timeout=30)
    assert wait_step(created["job_id"], "tools_list").data == {"count": 500}
    tools = api.get(f"{SESSIONS}/{created['session_id']}/tools").json()["tools"]
    assert [tool["name"] for tool in tools[:2]] == ["tool_00000", "tool_00001"]


def test_a_slow_start_is_waited_for_and_a_stop_during_it_wins(api: Any) -> None:
    slow = ready(api, python_server("slow_start.py", "1.5"))
    assert steps(slow["job_id"]) == START_STEPS
    stuck = create(api, python_server("slow_start.py", "60"))
    wait_step(stuck["job_id"], "mcp_start")
    response = api.delete(f"{SESSIONS}/{stuck['session_id']}")
    assert response.json() == {"ok": True, "status": "cancelled"}
    assert [step for step, _ in steps(stuck["job_id"])][-2:] == ["mcp_start", "cancel"]
    no_session_processes(stuck["job_id"])


def test_a_server_crashing_mid_call_is_a_409_and_ends_the_session_with_its_stderr(
    api: Any,
) -> None:
    created = ready(api, python_server("crash_mid_call.py"))
    response = call(api, created["session_id"], "echo", message="boom")
    assert response.status_code == 409
    assert response.json()["error"] == "mcp tools/call: server exited (code 7)"
    job = terminal(created["job_id"], 10)
    assert job.status == "error"
    assert job.error.startswith("mcp server exited unexpectedly (code 7)")
    assert "panic: something broke" in job.error
    no_session_processes(job.pk)


def test_list_changed_relists_and_says_what_changed(api: Any) -> None:
    created = ready(api, python_server("list_changed.py"))
    before = {
        t["name"] for t in api.get(f"{SESSIONS}/{created['session_id']}/tools").json()["tools"]
    }
    assert call(api, created["session_id"], "mutate").status_code == 200
    change = wait_step(created["job_id"], "tools_changed", 10)
    after = {
        t["name"] for t in api.get(f"{SESSIONS}/{created['session_id']}/tools").json()["tools"]
    }
    assert after != before
    assert change.data["added"] == sorted(after - before)
    assert change.data["removed"] == sorted(before - after)
    assert api.get(f"/v1/jobs/{created['job_id']}").json()["result"]["tools"][0]["name"]


def test_tools_differing_from_the_commands_last_run_are_reported(api: Any) -> None:
    command = python_server("tiny_server.py")
    session = ready(api, command)
    fingerprint = ToolFingerprint.objects.get(command_key=command_key(command_validate(command)))
    planted = {**fingerprint.fingerprints, "retired_tool": "0" * 64}
    planted["echo"] = "f" * 64
    ToolFingerprint.objects.filter(pk=fingerprint.pk).update(fingerprints=planted)
    api.delete(f"{SESSIONS}/{session['session_id']}")
    again = ready(api, command)
    change = wait_step(again["job_id"], "tools_changed")
    assert change.data == {"added": [], "removed": ["retired_tool"], "changed": ["echo"]}
    order = [step for step, _ in steps(again["job_id"])]
    assert order[-3:] == ["tools_list", "tools_changed", "ready"]


# --- lifetimes, secrets, job types ------------------------------------------------------------


def test_ttl_expiry_ends_the_session_and_leaves_no_process(api: Any) -> None:
    created = ready(api, python_server("tiny_server.py"), ttl_seconds=3)
    job = terminal(created["job_id"], 10)
    assert job.status == "expired"
    last = events(job.pk)[-1]
    assert (last.step, last.message) == ("expire", "Job expired after 3 seconds")
    no_session_processes(job.pk)
    session = SandboxSession.objects.get(pk=created["session_id"])
    assert session.stopped_at is not None


def test_an_unknown_secret_reference_fails_the_start_clearly(api: Any) -> None:
    created = create(api, python_server("tiny_server.py"), env={"API_TOKEN": "${secret:nope}"})
    job = terminal(created["job_id"])
    assert job.error == 'env "API_TOKEN" refers to an unknown secret "nope"'
    assert ("sandbox", "start") not in steps(job.pk)


def test_tool_run_calls_one_tool_and_completes_with_its_result(api: Any) -> None:
    payload = {"start_command": python_server("tiny_server.py"), "tool": "echo"}
    payload["arguments"] = {"message": "once"}
    response = api.post("/v1/jobs", {"type": "tool.run", "payload": payload})
    job = terminal(response.json()["job_id"])
    assert job.status == "complete", job.error
    assert job.result["result"]["content"][0]["text"] == "once"
    assert [s for s, _ in steps(job.pk)][-4:] == ["ready", "tool_call", "tool_call", "complete"]
    assert wait_for(lambda: ToolCall.objects.first(), 5, "the call row").outcome == "ok"
    no_session_processes(job.pk)


@pytest.mark.parametrize("job_type", ["mcp.test", "mcp.run"])
def test_session_types_created_on_jobs_get_a_session(api: Any, job_type: str) -> None:
    payload = {"start_command": python_server("tiny_server.py")}
    job_id = api.post("/v1/jobs", {"type": job_type, "payload": payload}).json()["job_id"]
    wait_step(job_id, "ready")
    session = SandboxSession.objects.get(job_id=job_id)
    assert api.get(f"/v1/jobs/{job_id}").json()["result"]["tools"]
    assert text(call(api, session.pk, "echo", message="via jobs")) == "via jobs"
    assert JobEvent.objects.filter(job_id=job_id, step="ready").count() == 1


def test_the_host_log_has_no_tracebacks(host: Host) -> None:
    assert "Traceback" not in host.output(), host.output()[-4000:]
