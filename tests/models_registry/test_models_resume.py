"""Model downloads survive a dead worker and outlive the wall-clock TTL while they work.

- A ``kill -9`` of the worker mid ``model.pull``: the job is queued again (the one rule
  of ``jobs.services.job_runner_lost``), another worker claims it and resumes from the
  partial file with a ``Range`` request (``resumed_bytes`` > 0); the event stream says
  so. Real ``manage.py worker`` processes, a real fake hub on loopback.
- The attempt rule itself: attempts left or not, a cancel request, a job type that is
  not resumable.
- Timed by progress: a pull whose bytes keep coming lives past its ``ttl_seconds``; one
  that stops sending expires after ``ttl_seconds`` without progress; none outlives the
  hard cap. The snapshot shows both clocks.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import Workspace
from jobs.models import Job, JobEvent
from jobs.runner import run_job
from jobs.services import job_cancel, job_enqueue, job_runner_lost
from matrixcloud.lib import wake
from tests import factories
from tests.factories import actor_of, bearer
from tests.fake_hub import FakeHub, standard_hub
from tests.jobs.test_jobs_worker import start_worker, terminal, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
BIG = "hf:acme/big-model-2B"
BIG_FILE = "model-00002.safetensors"
REASON = "the process running this job (worker:gone:1) stopped heart-beating 7 s ago"


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with standard_hub() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(hub: FakeHub, settings: Any, tmp_path: Path) -> Iterator[FakeHub]:
    settings.HF_ENDPOINT = hub.url
    settings.HF_TOKEN = ""
    settings.MATRIX_HF_CACHE_DIR = tmp_path / "cache"
    hub.rate = 0.0
    hub.stall.clear()
    hub.released.clear()
    hub.requests.clear()
    yield hub
    hub.released.set()  # no held connection outlives its test


@pytest.fixture
def owner() -> tuple[Workspace, str]:
    _user, workspace, token = factories.signup("Rita Resume", "rita@resume.test", "Resume")
    return workspace, token


def events(job_id: str, step: str | None = None) -> list[JobEvent]:
    found = JobEvent.objects.filter(job_id=job_id).order_by("seq")
    return list(found.filter(step=step) if step else found)


def downloaded(job_id: str) -> int:
    progress = [e.data or {} for e in events(job_id, "download")]
    return max((int(d.get("downloaded_bytes", 0)) for d in progress), default=0)


def enqueue(workspace: Workspace, job_type: str, ttl: int = 0, **payload: Any) -> Job:
    return job_enqueue(
        job_type=job_type, payload=payload, ttl_seconds=ttl, actor=actor_of(workspace)
    )


def running(job: Job, attempts: int) -> None:
    Job.objects.filter(pk=job.pk).update(
        status="running", runner="worker:gone:1", attempts=attempts, started_at=timezone.now()
    )


# --- a dead worker ---------------------------------------------------------------------------
def test_a_pull_whose_worker_is_sigkilled_resumes_on_another_worker(
    api: Any, owner: Any, hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = owner
    cache = tmp_path / "cache"
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setenv("MATRIX_RUNTIME_HF_CACHE_DIR", str(cache))
    hub.rate = 300_000  # the 2 MiB file takes about 7 s: the kill lands mid-way
    first = start_worker(tmp_path / "first.log").ready()
    second = None
    try:
        response = api.post(
            "/v1/jobs", {"type": "model.pull", "payload": {"model": BIG}}, **bearer(token)
        )
        assert response.status_code == 202, response.content
        job_id = response.json()["job_id"]
        wait_for(lambda: downloaded(job_id) > 300_000, 30, "the download to get going")
        first.signal_group(signal.SIGKILL)
        first.proc.wait(timeout=10)
        partial = [p for p in cache.rglob("*.incomplete") if p.stat().st_size > 0]
        assert partial, "the killed worker left its partial file for a resume"
        left = partial[0].stat().st_size

        second = start_worker(tmp_path / "second.log").ready()
        ended = terminal(job_id, 90)
        assert ended.status == "complete", ended.error
        assert ended.attempts == 2
        assert ended.result["resumed_bytes"] >= left > 0
        assert ended.result["downloaded_bytes"] < ended.result["total_bytes"]

        retry = events(job_id, "retry")
        assert len(retry) == 1
        assert retry[0].status == "queued"
        assert "stopped heart-beating" in retry[0].message
        assert retry[0].message.endswith("queued again to resume where it stopped (attempt 2 of 3)")
        starts = events(job_id, "start")
        assert [s.message for s in starts] == ["Job started", "Job started again (attempt 2)"]
        resumed = [e for e in events(job_id, "download") if e.message.startswith("resuming")]
        assert len(resumed) == 1
        assert resumed[0].data["resumed_bytes"] >= left
        assert retry[0].seq < starts[1].seq < resumed[0].seq
        gets = hub.gets_of(BIG_FILE)  # the first run's GET, then the resume's Range GET
        assert len(gets) == 2
        assert "Range" not in gets[0]
        assert gets[1]["Range"] == f"bytes={ended.result['resumed_bytes']}-"

        snapshot = api.get(f"/v1/jobs/{job_id}", **bearer(token)).json()
        assert snapshot["status"] == "complete"
        assert snapshot["attempts"] == 2
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_a_resumable_job_with_attempts_left_is_queued_again(owner: Any) -> None:
    workspace, _ = owner
    job = enqueue(workspace, "model.pull", model=BIG)
    running(job, attempts=1)
    heard: list[dict[str, Any]] = []
    with wake.listening(heard.append):
        assert job_runner_lost(job.pk, reason=REASON) == "queued"
    assert {"type": "worker.wake"} in heard  # the workers look for it at once
    row = Job.objects.get(pk=job.pk)
    assert (row.status, row.runner, row.heartbeat_at, row.error) == ("queued", "", None, "")
    retry = events(job.pk, "retry")[-1]
    assert retry.message == f"{REASON}; queued again to resume where it stopped (attempt 2 of 3)"
    assert retry.data == {"attempt": 2, "max_attempts": 3}
    assert job_runner_lost(job.pk, reason=REASON) == ""  # not running: nothing to do


def test_a_resumable_job_out_of_attempts_ends_error_saying_so(owner: Any, settings: Any) -> None:
    workspace, _ = owner
    job = enqueue(workspace, "model.pull", model=BIG)
    running(job, attempts=3)
    assert job_runner_lost(job.pk, reason=REASON) == "error"
    row = Job.objects.get(pk=job.pk)
    assert row.error == f"{REASON} (attempt 3 of 3)"
    assert not events(job.pk, "retry")

    settings.MATRIX_JOB_MAX_ATTEMPTS = 1  # an operator who wants no second run
    other = enqueue(workspace, "model.attach", runtime_id="local", model=BIG)
    running(other, attempts=1)
    assert job_runner_lost(other.pk, reason=REASON) == "error"


def test_a_cancelled_or_not_resumable_job_is_never_run_again(owner: Any) -> None:
    workspace, _ = owner
    pull = enqueue(workspace, "model.pull", model=BIG)
    running(pull, attempts=1)
    job_cancel(job=Job.objects.get(pk=pull.pk), actor=actor_of())
    assert job_runner_lost(pull.pk, reason=REASON) == "error"
    assert Job.objects.get(pk=pull.pk).error == REASON

    inspect = enqueue(workspace, "model.inspect", model=BIG)
    running(inspect, attempts=1)
    assert job_runner_lost(inspect.pk, reason=REASON) == "error"
    assert not events(inspect.pk, "retry")


# --- timed by progress -----------------------------------------------------------------------
def test_a_pull_that_keeps_making_progress_outlives_its_ttl(
    api: Any, owner: Any, hub: FakeHub, settings: Any
) -> None:
    workspace, token = owner
    hub.rate = 400_000  # about 5 s: well past the 2 s allowed without progress
    job = enqueue(workspace, "model.pull", ttl=2, model=BIG)
    assert job.ttl_seconds == 2
    assert job.deadline_at == job.created_at + timedelta(seconds=settings.MATRIX_MODEL_MAX_SECONDS)
    started = time.monotonic()
    run_job(job.pk)
    took = time.monotonic() - started
    row = Job.objects.get(pk=job.pk)
    assert row.status == "complete", row.error
    assert took > 3, "the download was meant to take longer than its ttl_seconds"
    assert row.progress_at is not None
    assert row.progress_at > row.started_at + timedelta(seconds=2)

    snapshot = api.get(f"/v1/jobs/{job.pk}", **bearer(token)).json()
    assert snapshot["stall_seconds"] == 2
    assert snapshot["deadline_at"] == row.deadline_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert snapshot["progress_at"] == row.progress_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert snapshot["expires_at"] > snapshot["created_at"]


def test_a_pull_that_stops_making_progress_expires_and_keeps_its_partial_file(
    owner: Any, hub: FakeHub, tmp_path: Path
) -> None:
    workspace, _ = owner
    hub.stall.add(BIG_FILE)  # half the bytes, then silence on an open connection
    job = enqueue(workspace, "model.pull", ttl=2, model=BIG)
    started = time.monotonic()
    run_job(job.pk)
    took = time.monotonic() - started
    row = Job.objects.get(pk=job.pk)
    assert row.status == "expired"
    assert events(job.pk)[-1].message == "Job expired: no progress for 2 seconds"
    assert took < 15
    partial = list((tmp_path / "cache").rglob("*.incomplete"))
    assert partial
    assert partial[0].stat().st_size > 0  # a later pull resumes from it


def test_no_model_job_outlives_the_hard_cap(owner: Any, hub: FakeHub, settings: Any) -> None:
    workspace, _ = owner
    settings.MATRIX_MODEL_MAX_SECONDS = 3
    hub.rate = 300_000  # about 7 s, always making progress
    job = enqueue(workspace, "model.pull", ttl=60, model=BIG)
    assert job.deadline_at == job.created_at + timedelta(seconds=3)
    assert job.expires_at == job.deadline_at  # queued, it may not wait past the cap either
    run_job(job.pk)
    row = Job.objects.get(pk=job.pk)
    assert row.status == "expired"
    assert events(job.pk)[-1].message == (
        "Job expired: it reached its 3 s cap (MATRIX_RUNTIME_MODEL_MAX_SECONDS)"
    )


def test_other_jobs_keep_their_wall_clock_ttl(owner: Any, settings: Any) -> None:
    workspace, _ = owner
    job = enqueue(workspace, "model.inspect", ttl=30, model=BIG)
    assert (job.ttl_seconds, job.deadline_at) == (30, None)
    assert job.expires_at == job.created_at + timedelta(seconds=30)
    default = enqueue(workspace, "model.pull", model=BIG)
    assert default.ttl_seconds == settings.MATRIX_MODEL_STALL_SECONDS
    assert default.expires_at == default.created_at + timedelta(
        seconds=settings.MATRIX_MAX_TTL_SECONDS
    )
