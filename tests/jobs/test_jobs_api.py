"""/v1/jobs without a worker: synchronous validation, list paging and filters, read,
cancel, tenancy; the concurrency limits, dispatch and the janitor through the real
services; the admin's cancel action. Worker processes are in ``test_jobs_worker``."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent, User, Workspace
from jobs.janitor import janitor_sweep
from jobs.models import Job, JobEvent
from jobs.services import (
    job_cancel,
    job_claim,
    job_enqueue,
    job_finish,
    jobs_claim_waiting,
)
from matrixcloud.lib import wake
from tests import factories, job_handlers
from tests.factories import actor_of, bearer, error, issue

pytestmark = pytest.mark.django_db

cast = factories.cast
assert job_handlers  # the test job types are registered on import
TOKEN = "operator-token-for-job-tests-0123456789"


def make(workspace: Workspace, job_type: str = "test.echo", **payload: Any) -> Job:
    """A queued job created through the service (the API's own path)."""
    payload = payload or ({"message": "hi"} if job_type == "test.echo" else {})
    return job_enqueue(job_type=job_type, payload=payload, ttl_seconds=0, actor=actor_of(workspace))


def create(api: Any, token: str, body: dict[str, Any]) -> Any:
    return api.post("/v1/jobs", body, **bearer(token))


@pytest.fixture
def wakes() -> Iterator[list[dict[str, Any]]]:
    """The wakes this process sends the workers while the test runs, in order."""
    heard: list[dict[str, Any]] = []
    with wake.listening(heard.append):
        yield heard


def steps(job: Job) -> list[tuple[str, str]]:
    return [(e.step, e.status) for e in JobEvent.objects.filter(job=job).order_by("seq")]


# --- POST /v1/jobs ------------------------------------------------------------------------
def test_create_answers_202_queues_the_job_and_dispatches_it_after_commit(
    api, cast, wakes, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = create(
            api, issue(cast.member), {"type": "test.echo", "payload": {"message": "x"}}
        )
        assert wakes == []  # not before the commit
    assert callbacks
    assert response.status_code == 202
    body = response.json()
    job = Job.objects.get(pk=body["job_id"])
    assert body == {"job_id": job.pk, "status": "queued", "events_url": f"/v1/jobs/{job.pk}/events"}
    assert f'"job_id":"{job.pk}"'.encode() in response.content  # compact, as the smoke greps
    assert job.pk.startswith("job_")
    assert (job.workspace, job.created_by, job.payload) == (
        cast.workspace,
        cast.member,
        {"message": "x"},
    )
    assert wakes == [{"type": "worker.wake"}]  # the workers look for the queued row
    assert job.status == "queued"
    first = JobEvent.objects.get(job=job)
    assert (first.seq, first.step, first.status, first.message) == (
        1,
        "queue",
        "queued",
        "Job queued",
    )
    assert first.data == {"type": "test.echo"}
    audit = AuditEvent.objects.get(action="job.created", target=job.pk)
    assert (audit.workspace_id, audit.actor) == (cast.workspace.pk, cast.member.pk)
    assert audit.meta == {"type": "test.echo", "ttl_seconds": 600}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"type": "x"}, 400, 'unknown job type: "x"'),
        ({"type": "x", "ttl_seconds": -5}, 400, 'unknown job type: "x"'),  # type first
        ({"type": "test.echo", "ttl_seconds": -1}, 422, "ttl_seconds must not be negative"),
        ({"type": "test.echo", "ttl_seconds": 601}, 422, "ttl_seconds 601 exceeds maximum 600"),
        ({"type": "test.echo"}, 422, "payload.message: Field required"),
        (
            {"type": "test.echo", "payload": {"message": "m", "count": 11}},
            422,
            "payload.count: Input should be less than or equal to 10",
        ),
        (
            {"type": "test.sleep", "payload": {"seconds": "soon"}},
            422,
            "payload.seconds: Input should be a valid number, unable to parse string as a number",
        ),
    ],
)
def test_create_refuses_bad_input_at_once_and_writes_nothing(api, cast, body, status, message):
    response = create(api, issue(cast.member), body)
    assert (response.status_code, response.json()) == (status, error(message, status))
    assert not Job.objects.exists()
    assert not AuditEvent.objects.filter(action="job.created").exists()


@pytest.mark.parametrize(("ttl", "expected"), [(None, 600), (0, 600), (1, 1), (600, 600)])
def test_ttl_zero_or_absent_is_the_maximum_and_the_clock_starts_at_creation(
    api, cast, ttl, expected
):
    body: dict[str, Any] = {"type": "test.sleep", "payload": None}
    if ttl is not None:
        body["ttl_seconds"] = ttl
    job = Job.objects.get(pk=create(api, issue(cast.member), body).json()["job_id"])
    assert job.ttl_seconds == expected
    assert job.expires_at - job.created_at == timedelta(seconds=expected)
    assert job.payload == {}  # null is absent


def test_the_maximum_ttl_follows_the_setting(api, cast, settings):
    settings.MATRIX_MAX_TTL_SECONDS = 30
    response = create(api, issue(cast.member), {"type": "test.echo", "ttl_seconds": 31})
    assert response.json() == error("ttl_seconds 31 exceeds maximum 30", 422)


def test_jobs_need_authentication(api, settings):
    settings.MATRIX_API_TOKEN = TOKEN
    for response in (api.get("/v1/jobs"), api.post("/v1/jobs", {"type": "test.echo"})):
        assert (response.status_code, response.json()) == (
            401,
            error("authentication required", 401),
        )


def test_wrong_methods_are_405(api, cast):
    job = make(cast.workspace)
    token = issue(cast.member)
    assert api.put("/v1/jobs", {}, **bearer(token)).status_code == 405
    response = api.post(f"/v1/jobs/{job.pk}", {}, **bearer(token))
    assert (response.status_code, response.json()) == (
        405,
        error('Method "POST" not allowed.', 405),
    )


# --- GET /v1/jobs, GET /v1/jobs/{id} -------------------------------------------------------
def test_list_is_newest_first_paged_by_cursor_and_only_the_workspaces(api, cast):
    mine = [make(cast.workspace).pk for _ in range(5)]
    make(cast.other_workspace)
    token, seen, cursor = issue(cast.member), [], ""
    for _ in range(3):
        body = api.get("/v1/jobs", {"limit": 2, "cursor": cursor}, **bearer(token)).json()
        seen += [job["job_id"] for job in body["jobs"]]
        cursor = body["next_cursor"]
    assert seen == mine[::-1]
    assert cursor is None


def test_list_filters_by_type_and_status(api, cast):
    echo, sleep, done = (
        make(cast.workspace),
        make(cast.workspace, "test.sleep"),
        make(cast.workspace),
    )
    job_finish(done.pk, "complete", result={"ok": 1})
    token = issue(cast.member)

    def ids(**query: str) -> list[str]:
        return [job["job_id"] for job in api.get("/v1/jobs", query, **bearer(token)).json()["jobs"]]

    assert ids(type="test.sleep") == [sleep.pk]
    assert ids(status="queued") == [sleep.pk, echo.pk]
    assert ids(status="complete", type="test.echo") == [done.pk]
    assert ids(status="running") == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": 0}, "limit must be between 1 and 200"),
        ({"limit": 201}, "limit must be between 1 and 200"),
        ({"limit": "ten"}, "limit must be an integer"),
        ({"cursor": "not-a-cursor"}, "invalid cursor"),
        (
            {"status": "done"},
            "status must be one of queued, running, complete, error, expired, cancelled",
        ),
    ],
)
def test_list_refuses_bad_paging_and_filters(api, cast, query, message):
    response = api.get("/v1/jobs", query, **bearer(issue(cast.member)))
    assert (response.status_code, response.json()) == (400, error(message, 400))


def test_list_costs_the_same_queries_for_one_job_or_twenty(api, cast):
    token = issue(cast.member)
    make(cast.workspace)
    with CaptureQueriesContext(connection) as one:
        api.get("/v1/jobs", **bearer(token))
    for _ in range(19):
        make(cast.workspace)
    with CaptureQueriesContext(connection) as twenty:
        assert len(api.get("/v1/jobs", **bearer(token)).json()["jobs"]) == 20
    assert len(twenty) == len(one) <= 8


def test_list_does_not_load_payloads(api, cast):
    """A payload can be large and no list shows it: the page's query leaves it out."""
    token = issue(cast.member)
    make(cast.workspace)
    with CaptureQueriesContext(connection) as queries:
        assert len(api.get("/v1/jobs", **bearer(token)).json()["jobs"]) == 1
    selects = [q["sql"] for q in queries if '"jobs_job"."type"' in q["sql"]]
    assert len(selects) == 1
    assert '"jobs_job"."status"' in selects[0]
    assert '"jobs_job"."payload"' not in selects[0]


def test_the_operator_lists_every_workspace_unless_it_names_one(api, cast, settings):
    settings.MATRIX_API_TOKEN = TOKEN
    ours, theirs = make(cast.workspace), make(cast.other_workspace)
    everything = api.get("/v1/jobs", **bearer(TOKEN)).json()["jobs"]
    assert [job["job_id"] for job in everything] == [theirs.pk, ours.pk]
    named = api.get("/v1/jobs", HTTP_X_MATRIX_WORKSPACE=cast.other_workspace.slug, **bearer(TOKEN))
    assert [job["job_id"] for job in named.json()["jobs"]] == [theirs.pk]


def test_get_returns_the_snapshot(api, cast):
    job = make(cast.workspace)
    job_finish(job.pk, "error", error="it broke")
    body = api.get(f"/v1/jobs/{job.pk}", **bearer(issue(cast.member))).json()
    job.refresh_from_db()
    assert body == {
        "job_id": job.pk,
        "type": "test.echo",
        "status": "error",
        "created_at": job.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expires_at": job.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished_at": job.finished_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "result": None,
        "error": "it broke",
        "workspace_id": cast.workspace.pk,
        "events_url": f"/v1/jobs/{job.pk}/events",
    }
    assert steps(job) == [("queue", "queued"), ("error", "error")]


def test_another_workspaces_job_is_404_everywhere_and_untouched(api, cast):
    theirs = make(cast.other_workspace)
    token = issue(cast.member)
    not_found = error("job not found", 404)
    for response in (
        api.get(f"/v1/jobs/{theirs.pk}", **bearer(token)),
        api.delete(f"/v1/jobs/{theirs.pk}", **bearer(token)),
        api.get("/v1/jobs/job_doesnotexist", **bearer(token)),
    ):
        assert (response.status_code, response.json()) == (404, not_found)
    listed = api.get("/v1/jobs", **bearer(token)).json()["jobs"]
    assert theirs.pk not in [job["job_id"] for job in listed]
    theirs.refresh_from_db()
    assert (theirs.status, theirs.cancel_requested_at) == ("queued", None)
    assert not AuditEvent.objects.filter(action="job.cancelled").exists()


# --- DELETE /v1/jobs/{id} ---------------------------------------------------------------------
def test_cancelling_a_queued_job_ends_it_now_and_keeps_the_record(api, cast):
    job = make(cast.workspace)
    token = issue(cast.member)
    response = api.delete(f"/v1/jobs/{job.pk}", **bearer(token))
    assert (response.status_code, response.json()) == (200, {"ok": True, "status": "cancelled"})
    assert api.get(f"/v1/jobs/{job.pk}", **bearer(token)).json()["status"] == "cancelled"
    assert steps(job) == [("queue", "queued"), ("cancel", "cancelled")]
    audit = AuditEvent.objects.get(action="job.cancelled", target=job.pk)
    assert (audit.actor, audit.meta) == (cast.member.pk, {"type": "test.echo", "status": "queued"})


def test_cancelling_a_finished_job_returns_its_status_and_changes_nothing(api, cast):
    job = make(cast.workspace)
    job_finish(job.pk, "complete", result={"n": 1})
    response = api.delete(f"/v1/jobs/{job.pk}", **bearer(issue(cast.member)))
    assert response.json() == {"ok": True, "status": "complete"}
    job.refresh_from_db()
    assert (job.status, job.result, job.cancel_requested_at) == ("complete", {"n": 1}, None)
    assert not AuditEvent.objects.filter(action="job.cancelled").exists()


def test_cancelling_a_running_job_asks_its_runner_and_says_how_it_stands(api, cast):
    """No worker runs here, so after the wait (1.5 s) the job is still running; the
    worker tests show a live runner ending it within a second."""
    job = make(cast.workspace)
    assert job_claim(job.pk, runner="worker:elsewhere:1") is not None
    response = api.delete(f"/v1/jobs/{job.pk}", **bearer(issue(cast.member)))
    assert response.json() == {"ok": True, "status": "running"}
    job.refresh_from_db()
    assert job.cancel_requested_at is not None
    assert job_cancel(job=job, actor=actor_of(name="again")) == "running"
    assert AuditEvent.objects.filter(action="job.cancelled", target=job.pk).count() == 1


# --- concurrency limits and dispatch -------------------------------------------------------------
@pytest.fixture
def limits(settings):
    settings.MATRIX_MAX_CONCURRENT_JOBS = 2
    settings.MATRIX_MAX_CONCURRENT_JOBS_PER_WORKSPACE = 1
    return settings


def test_claims_respect_the_installation_and_workspace_limits(cast, limits):
    a1, a2, b1 = make(cast.workspace), make(cast.workspace), make(cast.other_workspace)
    third = make(cast.other_workspace)
    assert job_claim(a1.pk, runner="w") is not None
    assert job_claim(a2.pk, runner="w") is None  # the workspace is at its limit
    assert job_claim(b1.pk, runner="w") is not None
    limits.MATRIX_MAX_CONCURRENT_JOBS_PER_WORKSPACE = 2
    assert job_claim(third.pk, runner="w") is None  # the installation is at its limit
    statuses = Job.objects.in_bulk([a1.pk, a2.pk, b1.pk, third.pk])
    assert [statuses[j.pk].status for j in (a1, a2, b1, third)] == [
        "running",
        "queued",
        "running",
        "queued",
    ]


def test_a_workspace_at_its_limit_does_not_hold_up_another(cast, limits):
    """Workspace A has a running job and a backlog; B's later job gets the free slot."""
    running = make(cast.workspace)
    backlog = [make(cast.workspace) for _ in range(3)]
    b_job = make(cast.other_workspace)
    job_claim(running.pk, runner="w")
    assert [job.pk for job in jobs_claim_waiting(runner="w", room=5)] == [b_job.pk]
    assert jobs_claim_waiting(runner="w", room=5) == []  # both slots taken
    assert set(Job.objects.filter(status="queued").values_list("pk", flat=True)) == {
        job.pk for job in backlog
    }


def test_the_claim_loop_takes_the_oldest_waiting_jobs_up_to_its_free_threads(cast, roomy):
    jobs = [make(cast.workspace) for _ in range(3)]
    claimed = jobs_claim_waiting(runner="worker:here:1", room=2)
    assert [job.pk for job in claimed] == [jobs[0].pk, jobs[1].pk]
    assert [(job.status, job.runner, job.attempts) for job in claimed] == [
        ("running", "worker:here:1", 1)
    ] * 2
    assert steps(claimed[0]) == [("queue", "queued"), ("start", "running")]
    assert jobs_claim_waiting(runner="worker:here:1", room=0) == []
    assert [job.pk for job in jobs_claim_waiting(runner="w", room=9)] == [jobs[2].pk]


def test_a_claim_of_waiting_jobs_expires_those_past_their_time(cast, roomy):
    late, fresh = make(cast.workspace), make(cast.workspace)
    Job.objects.filter(pk=late.pk).update(expires_at=timezone.now())
    assert [job.pk for job in jobs_claim_waiting(runner="w", room=2)] == [fresh.pk]
    assert steps(late)[-1] == ("expire", "expired")


def test_a_finish_wakes_the_worker_it_ran_in(
    cast, limits, wakes, django_capture_on_commit_callbacks
):
    first, waiting = make(cast.workspace), make(cast.workspace)
    job_claim(first.pk, runner="w")
    assert job_claim(waiting.pk, runner="w") is None
    with django_capture_on_commit_callbacks(execute=True):
        job_finish(first.pk, "complete")
    assert wakes == [{"type": "worker.wake"}]
    assert job_claim(waiting.pk, runner="w") is not None
    queued = make(cast.workspace)
    with django_capture_on_commit_callbacks(execute=True):
        job_cancel(job=queued, actor=actor_of(name="x"))
    assert wakes == [{"type": "worker.wake"}]  # a queued job's end frees no slot


def test_claiming_an_expired_queued_job_expires_it(cast):
    job = make(cast.workspace)
    Job.objects.filter(pk=job.pk).update(expires_at=timezone.now())
    assert job_claim(job.pk, runner="w") is None
    job.refresh_from_db()
    assert job.status == "expired"
    assert steps(job)[-1] == ("expire", "expired")


# --- the janitor ------------------------------------------------------------------------------
@pytest.fixture
def roomy(settings):
    settings.MATRIX_MAX_CONCURRENT_JOBS = settings.MATRIX_MAX_CONCURRENT_JOBS_PER_WORKSPACE = 10


def running_job(workspace: Workspace, *, runner: str, silent: float) -> Job:
    job = make(workspace, "test.sleep")
    assert job_claim(job.pk, runner=runner) is not None
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=silent))
    return job


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_janitor_ends_jobs_whose_runner_stopped_heart_beating(cast, roomy):
    host = socket.gethostname()
    stale = running_job(cast.workspace, runner="worker:another-host:7", silent=21)
    dead_here = running_job(cast.workspace, runner=f"worker:{host}:{dead_pid()}", silent=7)
    alive_here = running_job(cast.workspace, runner=f"worker:{host}:{os.getpid()}", silent=7)
    quiet_elsewhere = running_job(cast.workspace, runner="worker:another-host:8", silent=7)
    assert janitor_sweep().orphaned == 2
    ended = Job.objects.in_bulk([stale.pk, dead_here.pk, alive_here.pk, quiet_elsewhere.pk])
    assert ended[stale.pk].error == (
        "the process running this job (worker:another-host:7) stopped heart-beating 21 s ago; "
        "the job was interrupted"
    )
    assert steps(dead_here)[-1] == ("error", "error")
    assert [ended[j.pk].status for j in (alive_here, quiet_elsewhere)] == ["running", "running"]


def test_the_janitor_expires_overdue_jobs_queued_or_running(cast, roomy):
    queued = make(cast.workspace)
    stuck = running_job(
        cast.workspace, runner=f"worker:{socket.gethostname()}:{os.getpid()}", silent=0
    )
    young = make(cast.workspace)
    late = timezone.now() - timedelta(seconds=6)
    Job.objects.filter(pk__in=[queued.pk, stuck.pk]).update(expires_at=late)
    assert janitor_sweep().expired == 2
    found = Job.objects.in_bulk([queued.pk, stuck.pk, young.pk])
    assert [found[j.pk].status for j in (queued, stuck, young)] == ["expired", "expired", "queued"]
    assert JobEvent.objects.filter(job=stuck).last().message == "Job expired after 600 seconds"


def test_the_janitor_prunes_finished_jobs_after_the_retention(cast, settings):
    settings.MATRIX_JOB_RETENTION_HOURS = 24
    old, recent, active = make(cast.workspace), make(cast.workspace), make(cast.workspace)
    for job in (old, recent):
        job_finish(job.pk, "complete")
    Job.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(hours=25))
    scratch = settings.MATRIX_DATA_DIR / "jobs" / old.pk
    scratch.mkdir(parents=True)
    Job.objects.filter(pk=active.pk).update(created_at=timezone.now() - timedelta(days=3))
    assert janitor_sweep().pruned == 1
    assert set(Job.objects.values_list("pk", flat=True)) == {recent.pk, active.pk}
    assert not JobEvent.objects.filter(job_id=old.pk).exists()
    assert not scratch.exists()


# --- admin ----------------------------------------------------------------------------------
@pytest.fixture
def operator_client(client):
    operator = User.objects.create_superuser(email="op@example.com", password="op-password-1")
    client.force_login(operator)
    client.operator = operator
    return client


def test_job_admin_pages_load(operator_client, cast):
    job = make(cast.workspace)
    for url in (
        reverse("admin:jobs_job_changelist") + "?q=test.echo",
        reverse("admin:jobs_job_change", args=[quote(job.pk)]),
        reverse("admin:jobs_jobevent_changelist") + f"?job__id__exact={job.pk}",
    ):
        response = operator_client.get(url)
        assert response.status_code == 200
        assert job.pk.encode() in response.content


def test_the_admin_cancel_action_goes_through_the_service(operator_client, cast):
    queued, done = make(cast.workspace), make(cast.workspace)
    job_finish(done.pk, "complete")
    response = operator_client.post(
        reverse("admin:jobs_job_changelist"),
        {"action": "cancel", "_selected_action": [queued.pk, done.pk]},
        follow=True,
    )
    assert b"Cancelled 1 job(s)" in response.content
    found = Job.objects.in_bulk([queued.pk, done.pk])
    assert (found[queued.pk].status, found[done.pk].status) == ("cancelled", "complete")
    audit = AuditEvent.objects.get(action="job.cancelled")
    assert (audit.target, audit.actor) == (queued.pk, operator_client.operator.pk)


def test_job_events_cannot_be_changed_in_admin(operator_client, cast):
    event = JobEvent.objects.get(job=make(cast.workspace))
    url = reverse("admin:jobs_jobevent_change", args=[event.pk])
    operator_client.post(url, {"message": "tampered"})
    event.refresh_from_db()
    assert event.message == "Job queued"
    assert operator_client.get(reverse("admin:jobs_jobevent_add")).status_code == 403
