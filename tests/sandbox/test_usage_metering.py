"""The sandbox paths meter what they do: one ``sandbox.start`` per session, however it
was created, and ``tool.call`` for the recorded calls that reached a server (a refused
call is recorded and audited, not metered). Under a real host: test_cloud_providers_sandbox."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import UsageEvent
from accounts.services.usage import usage_summary
from jobs.services import job_enqueue
from sandbox.choices import ToolCallOutcome
from sandbox.services import CallEntry, sandbox_create, session_ensure, tool_calls_record
from tests import factories
from tests.factories import actor_of, bearer, issue

pytestmark = pytest.mark.django_db

cast = factories.cast
COMMAND = "node /opt/servers/everything/dist/index.js stdio"


def entry(session: Any, outcome: str, user: Any = None) -> CallEntry:
    return CallEntry(
        session=session,
        name="echo",
        arguments={"message": "hi"},
        actor=user.pk if user else "operator",
        user_id=user.pk if user else None,
        ip="127.0.0.1",
        started_at=timezone.now() - timedelta(milliseconds=5),
        outcome=outcome,
        duration_ms=5,
    )


def test_a_session_created_through_the_api_meters_one_start(api, cast):
    response = api.post(
        "/v1/sandbox/sessions", {"start_command": COMMAND}, **bearer(issue(cast.member))
    )
    assert response.status_code == 202
    event = UsageEvent.objects.get()
    assert (event.kind, event.quantity, event.workspace_id, event.user_id) == (
        "sandbox.start",
        1,
        cast.workspace.pk,
        cast.member.pk,
    )
    assert event.meta == {"session_id": response.json()["session_id"], "type": "mcp.test"}


def test_a_session_job_from_v1_jobs_meters_its_start_once(cast):
    job = job_enqueue(
        job_type="mcp.test",
        payload={"start_command": COMMAND},
        ttl_seconds=None,
        actor=actor_of(cast.workspace),
    )
    session_ensure(job)
    session_ensure(job)  # a host picking it up again
    assert usage_summary(workspace=cast.workspace) == {"sandbox.start": 1}


def test_recorded_calls_are_metered_per_workspace_and_user_except_refusals(cast):
    ours = sandbox_create(
        start_command=COMMAND, env=None, ttl_seconds=0, actor=actor_of(cast.workspace, name="t")
    )
    theirs = sandbox_create(
        start_command=COMMAND,
        env=None,
        ttl_seconds=0,
        actor=actor_of(cast.other_workspace, name="t"),
    )
    UsageEvent.objects.all().delete()
    batch = [
        entry(ours, ToolCallOutcome.OK, cast.owner),
        entry(ours, ToolCallOutcome.TOOL_ERROR, cast.owner),
        entry(ours, ToolCallOutcome.PROTOCOL_ERROR, cast.member),
        entry(ours, ToolCallOutcome.TIMEOUT),
        entry(ours, ToolCallOutcome.REFUSED, cast.owner),
        entry(theirs, ToolCallOutcome.OK, cast.outsider),
    ]
    with CaptureQueriesContext(connection) as captured:
        tool_calls_record(batch)
    usage_inserts = [
        q for q in captured.captured_queries if 'INTO "accounts_usageevent"' in q["sql"]
    ]
    assert len(usage_inserts) == 1  # one INSERT for the whole batch

    assert usage_summary(workspace=cast.workspace) == {"tool.call": 4}
    assert usage_summary(workspace=cast.other_workspace) == {"tool.call": 1}
    per_user = dict(
        UsageEvent.objects.filter(workspace=cast.workspace).values_list("user_id", "quantity")
    )
    assert per_user == {cast.owner.pk: 2, cast.member.pk: 1, None: 1}


def test_a_call_refused_before_ready_is_not_metered(api, cast):
    from tests.sandbox.test_sandbox_api import make, running

    session = running(make(cast.workspace), ready=False)
    UsageEvent.objects.all().delete()
    response = api.post(
        f"/v1/sandbox/sessions/{session.pk}/tools/call",
        {"name": "echo"},
        **bearer(issue(cast.owner)),
    )
    assert response.status_code == 409
    assert not UsageEvent.objects.exists()
