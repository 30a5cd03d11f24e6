"""agent.run end to end: a real sandbox host, server-everything under bubblewrap, and a
scripted OpenAI-compatible server on loopback (tests/fake_llm.py).

The model asks for ``echo``, then ``get-sum``, then answers; the job's events show each
model turn and each tool call, the result holds the answer, the tokens are metered,
the tool calls recorded. A model that never stops is stopped by the step, token and
time limits with an error naming the limit. The payload is checked at creation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db.models import Sum

from accounts.models import AuditEvent, UsageEvent
from accounts.services import local_workspace
from accounts.services.providers import provider_upsert
from jobs.models import Job
from models_registry.models import ModelInstallation, ModelProfile
from sandbox.isolation import TIER_BUBBLEWRAP, isolation_tier
from sandbox.models import ToolCall
from tests.factories import actor_of, signup
from tests.fake_llm import MODEL, Reply, fake_llm
from tests.jobs.test_jobs_worker import wait_for
from tests.sandbox_processes import (
    Host,
    end_all_sessions,
    events,
    needs_npm,
    no_session_processes,
    npm_server,
    running_host,
    steps,
    terminal,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), needs_npm]

EVERYTHING = npm_server("server-everything", "stdio")
ANSWER = "The server echoed 'hello agent' and 2 + 40 = 42."
SCRIPT = [
    Reply(tool_calls=(("echo", {"message": "hello agent"}),), prompt_tokens=100),
    Reply(tool_calls=(("get-sum", {"a": 2, "b": 40}),), prompt_tokens=150, completion_tokens=7),
    Reply(content=ANSWER, prompt_tokens=200, completion_tokens=12),
]
ECHO = Reply(tool_calls=(("echo", {"message": "again"}),))


@pytest.fixture(scope="module")
def host(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    if isolation_tier() != TIER_BUBBLEWRAP:
        pytest.fail("these tests run servers under bubblewrap, which is unavailable here")
    with running_host(tmp_path_factory.mktemp("agent-host") / "host.log") as running:
        yield running


@pytest.fixture(autouse=True)
def clean(host: Host) -> Iterator[None]:
    yield
    end_all_sessions()


def start(api: Any, **payload: Any) -> str:
    body = {"type": "agent.run", "payload": {"start_command": EVERYTHING, **payload}}
    response = api.post("/v1/jobs", body)
    assert response.status_code == 202, response.content
    return str(response.json()["job_id"])


def agent_events(job_id: str) -> list[tuple[str, str, str]]:
    """The run's events after ``ready``: (step, status, message)."""
    seen = [(e.step, e.status, e.message) for e in events(job_id) if e.step != "log"]
    ready = [step for step, _, _ in seen].index("ready")
    return seen[ready + 1 :]


def tokens(job_id: str) -> int:
    rows = UsageEvent.objects.filter(kind="llm.tokens", meta__job_id=job_id)
    return int(rows.aggregate(total=Sum("quantity"))["total"] or 0)


# --- a run to its answer ---------------------------------------------------------------


def test_the_model_calls_two_tools_then_answers(api: Any) -> None:
    with fake_llm(SCRIPT) as llm:
        job_id = start(api, prompt="Echo 'hello agent', then add 2 and 40.", model=MODEL,
                       base_url=llm.base_url, system="You are terse.")  # fmt: skip
        job = terminal(job_id, 40)
    assert job.status == "complete", (job.error, agent_events(job_id))
    usage = {"prompt_tokens": 450, "completion_tokens": 24, "total_tokens": 474}
    assert job.result == {"output": ANSWER, "steps": 3, "usage": usage}
    assert agent_events(job_id) == [
        ("agent_run", "start", f"Agent started: model {MODEL} with 13 tools, at most 8 steps"),
        ("agent_step", "running", "Step 1: the model asked for 1 tool call"),
        ("tool_call", "start", "Calling tool echo"),
        ("tool_call", "ok", "Tool echo answered"),
        ("agent_step", "running", "Step 2: the model asked for 1 tool call"),
        ("tool_call", "start", "Calling tool get-sum"),
        ("tool_call", "ok", "Tool get-sum answered"),
        ("agent_step", "ok", "Step 3: the model answered"),
        ("agent_run", "ok", "Agent finished in 3 steps (474 tokens)"),
        ("complete", "complete", "Job complete"),
    ]
    by_step = [e for e in events(job_id) if e.step == "agent_step"]
    assert by_step[0].data["tool_calls"] == [
        {"name": "echo", "arguments": '{"message": "hello agent"}'}
    ]
    assert by_step[1].data["usage"] == {
        "prompt_tokens": 150, "completion_tokens": 7, "total_tokens": 157, "reported": True,
    }  # fmt: skip
    assert by_step[2].data["content"] == ANSWER

    # What the model was shown: the server's tools, then each tool's real answer.
    first, second, third = (request["body"] for request in llm.requests)
    assert first["model"] == MODEL
    assert first["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Echo 'hello agent', then add 2 and 40."},
    ]
    offered = {tool["function"]["name"]: tool["function"] for tool in first["tools"]}
    assert {"echo", "get-sum"} <= set(offered)
    assert offered["get-sum"]["parameters"]["properties"]["a"]["type"] == "number"
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["content"] == "Echo: hello agent"
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "echo"
    assert "42" in third["messages"][-1]["content"]
    assert all("Authorization" not in request["headers"] for request in llm.requests)

    calls = wait_for(lambda: list(ToolCall.objects.order_by("started_at")), 5, "the call rows")
    assert [(call.tool, call.outcome) for call in calls] == [("echo", "ok"), ("get-sum", "ok")]
    assert tokens(job_id) == 474
    no_session_processes(job_id)


def test_a_provider_credential_chooses_the_endpoint_and_its_key(api: Any) -> None:
    with fake_llm([Reply(content="done")]) as llm:
        provider_upsert(
            provider="openai",
            secret="sk-test-agent-0123456789",
            meta={"base_url": llm.base_url},
            actor=actor_of(local_workspace()),
        )
        job = terminal(start(api, prompt="hi", model=MODEL), 30)
    assert job.status == "complete", job.error
    assert job.result["output"] == "done"
    assert llm.requests[0]["headers"]["Authorization"] == "Bearer sk-test-agent-0123456789"
    read = AuditEvent.objects.get(action="provider.credential.read")
    assert (read.target, read.meta["purpose"]) == ("openai", "agent.run")


def test_only_the_tools_asked_for_are_offered(api: Any) -> None:
    with fake_llm([Reply(content="ok")]) as llm:
        job = terminal(start(api, prompt="hi", model=MODEL, base_url=llm.base_url,
                             tools=["echo"]), 30)  # fmt: skip
    assert job.status == "complete", job.error
    assert [tool["function"]["name"] for tool in llm.requests[0]["body"]["tools"]] == ["echo"]


def test_a_tool_the_server_lacks_is_reported_to_the_model(api: Any) -> None:
    script = [Reply(tool_calls=(("no_such_tool", {}),)), Reply(content="sorry")]
    with fake_llm(script) as llm:
        job = terminal(start(api, prompt="hi", model=MODEL, base_url=llm.base_url), 30)
    assert job.status == "complete", job.error
    assert llm.requests[1]["body"]["messages"][-1]["content"] == (
        "error: there is no tool named 'no_such_tool'"
    )
    assert ("tool_call", "error", "Tool no_such_tool not called: there is no tool named "
            "'no_such_tool'") in agent_events(job.pk)  # fmt: skip


def installation(workspace: Any, endpoint_url: str, status: str = "ready") -> ModelInstallation:
    profile = ModelProfile.objects.create(
        workspace=workspace, source_type="url", external_id=MODEL, display_name="Fake"
    )
    return ModelInstallation.objects.create(
        workspace=workspace,
        profile=profile,
        runtime_id="local",
        install_mode="external_endpoint",
        status=status,
        endpoint_url=endpoint_url,
    )


def test_an_attached_models_endpoint_serves_the_run(api: Any) -> None:
    with fake_llm([Reply(content="from the installation")]) as llm:
        attached = installation(local_workspace(), llm.base_url.removesuffix("/v1"))
        job = terminal(start(api, prompt="hi", installation_id=attached.pk), 30)
    assert job.status == "complete", job.error
    assert job.result["output"] == "from the installation"
    assert llm.requests[0]["body"]["model"] == MODEL  # the profile's model
    assert "Authorization" not in llm.requests[0]["headers"]


def test_another_workspaces_or_an_unready_installation_is_refused(api: Any) -> None:
    _, other, _ = signup("Oscar Outsider", "oscar@agent.test", "Globex")
    theirs = installation(other, "http://127.0.0.1:9/v1")
    job = terminal(start(api, prompt="hi", installation_id=theirs.pk), 30)
    assert job.error == f"agent.run has no model endpoint: model installation {theirs.pk} not found"
    failed = installation(local_workspace(), "http://127.0.0.1:9/v1", status="failed")
    job = terminal(start(api, prompt="hi", installation_id=failed.pk), 30)
    assert job.error == (
        f"agent.run has no model endpoint: model installation {failed.pk} serves no endpoint "
        "(status failed; attach it as an external endpoint, or serve it)"
    )


# --- limits ----------------------------------------------------------------------------------


def test_the_step_limit_stops_a_looping_model(api: Any) -> None:
    with fake_llm(loop=ECHO) as llm:
        job = terminal(start(api, prompt="loop", model=MODEL, base_url=llm.base_url,
                             max_steps=3), 30)  # fmt: skip
    message = (
        "agent.run stopped: step limit reached (max_steps=3): "
        "the model was still calling tools after 3 steps"
    )
    assert (job.status, job.error) == ("error", message)
    assert len(llm.requests) == 3
    assert steps(job.pk)[-2:] == [("agent_run", "error"), ("error", "error")]
    assert [s for s, _, _ in agent_events(job.pk)].count("agent_step") == 3
    assert wait_for(lambda: ToolCall.objects.count() == 2, 5, "two calls recorded")
    assert tokens(job.pk) == 3 * 25  # every turn the model was paid for
    no_session_processes(job.pk)


def test_the_token_limit_stops_a_looping_model(api: Any) -> None:
    costly = Reply(tool_calls=ECHO.tool_calls, prompt_tokens=1000)
    with fake_llm(loop=costly) as llm:
        job = terminal(start(api, prompt="loop", model=MODEL, base_url=llm.base_url,
                             max_tokens=2500, max_steps=50), 30)  # fmt: skip
    assert job.status == "error"
    assert job.error == (
        "agent.run stopped: token limit reached (max_tokens=2500): 3015 tokens used in 3 steps"
    )


def test_the_time_limit_stops_a_looping_model(api: Any) -> None:
    with fake_llm(loop=ECHO, delay=0.4) as llm:
        job = terminal(start(api, prompt="loop", model=MODEL, base_url=llm.base_url,
                             max_steps=50, max_seconds=2), 30)  # fmt: skip
    assert job.status == "error"
    assert job.error.startswith("agent.run stopped: time limit reached (max_seconds=2) after ")
    done = int(job.error.rsplit(" after ", 1)[1].split()[0])
    assert 1 <= done < 50
    assert len(llm.requests) >= done
    no_session_processes(job.pk)


def test_no_endpoint_is_a_clear_error(api: Any) -> None:
    job = terminal(start(api, prompt="hi", model=MODEL), 30)
    assert job.status == "error"
    assert job.error == (
        "agent.run has no model endpoint: the workspace has no openai/default credential: "
        "store one at /v1/cloud/providers, or give base_url or installation_id"
    )


def test_an_endpoint_error_is_reported_with_the_servers_message(api: Any) -> None:
    with fake_llm([]) as llm:  # no replies: the server answers 500 with a message
        job = terminal(start(api, prompt="hi", model=MODEL, base_url=llm.base_url), 30)
    assert job.status == "error"
    assert job.error == "agent.run: the model endpoint answered 500: the script has no more replies"


# --- the payload ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"model": MODEL}, "payload.prompt"),
        ({"prompt": "hi", "base_url": "ftp://example.test"}, "payload.base_url"),
        ({"prompt": "hi", "max_steps": 0}, "payload.max_steps"),
        ({"prompt": "hi", "max_seconds": 99999}, "payload.max_seconds"),
        ({"prompt": "hi", "start_command": "bash -c ls"}, "payload.start_command"),
    ],
)
def test_a_bad_payload_is_a_422_naming_the_field(
    api: Any, payload: dict[str, Any], field: str
) -> None:
    body = {"type": "agent.run", "payload": {"start_command": EVERYTHING, **payload}}
    response = api.post("/v1/jobs", body)
    assert response.status_code == 422, response.content
    assert response.json()["error"].startswith(f"{field}: ")
    assert not Job.objects.exists()


def test_agent_run_is_a_capability(api: Any) -> None:
    assert "agent.run" in api.get("/v1/capabilities").json()["capabilities"]
