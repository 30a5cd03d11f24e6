"""Shared fixtures."""

from __future__ import annotations

import ast
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test.utils import override_settings
from rest_framework.test import APIClient

JOBS_END_SECONDS = 30.0


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """The quick lane (``MATRIX_TEST_QUICK``, ``./dev test --quick``) runs no slow test,
    so it does not even import a module marked slow as a whole (their imports, the
    browser's and Schemathesis', cost seconds per worker)."""
    if not os.environ.get("MATRIX_TEST_QUICK") or not collection_path.name.startswith("test_"):
        return None
    return True if _marked_slow(collection_path) else None


def _marked_slow(path: Path) -> bool:
    """Whether the module's ``pytestmark`` names ``slow``."""
    if path.suffix != ".py":
        return False
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets
        ):
            return "mark.slow" in ast.unparse(node.value)
    return False


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """A SQLite test database is a file in the test data dir, never Django's in-memory one:
    the processes tests start (servers, workers, hosts) open it by path."""
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3") and not database.get("TEST", {}).get("NAME"):
        database.setdefault("TEST", {})["NAME"] = str(
            Path(settings.MATRIX_DATA_DIR) / "test-db.sqlite3"
        )


@pytest.fixture
def api() -> APIClient:
    """An API client on loopback (REMOTE_ADDR 127.0.0.1), sending JSON."""
    client = APIClient(REMOTE_ADDR="127.0.0.1")
    client.default_format = "json"
    return client


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> Iterator[None]:
    """This process hashes passwords with Argon2id at its lowest cost (tests/hashers.py)
    in place of the service's Argon2id; the service's other hashers stay."""
    cheap = "tests.hashers.CheapArgon2PasswordHasher"
    others = [
        path for path in settings.PASSWORD_HASHERS if not path.endswith(".Argon2PasswordHasher")
    ]
    hashers = [cheap, *others]
    with override_settings(PASSWORD_HASHERS=hashers):
        yield


@pytest.fixture(autouse=True)
def no_job_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A transactional test ends every job it left active before its tables are flushed.

    The processes a module starts once (sandbox hosts, workers) outlive each test; a
    session or job still winding down would write its last rows (events, its finish,
    the slots) while the flush TRUNCATEs, and on PostgreSQL the two deadlock. So each
    active job is cancelled here and waited for (its runner ends it) until it has ended,
    or its runner is gone and can write nothing more (then it is ended here). Once no
    job is active, those processes write only their own heartbeat row: the flush is
    alone with the data it empties. This fixture's teardown runs before the flush: it
    sets the database up first, so it is torn down after it."""
    if not _transactional(request):
        yield
        return
    request.getfixturevalue("_django_db_helper")
    yield
    _end_active_jobs(request.node.nodeid)


def _transactional(request: pytest.FixtureRequest) -> bool:
    if "transactional_db" in request.fixturenames or "live_server" in request.fixturenames:
        return True
    marker = request.node.get_closest_marker("django_db")
    if marker is None:
        return False
    return bool(marker.kwargs.get("transaction", marker.args[0] if marker.args else False))


def _end_active_jobs(test: str) -> None:
    from accounts.principals import Actor
    from jobs.choices import JobStatus
    from jobs.models import Job
    from jobs.runner import runner_gone
    from jobs.services import job_cancel, job_finish

    active = Job.objects.filter(status__in=JobStatus.active())
    for job in active.select_related("workspace"):
        job_cancel(job=job, actor=Actor.system(job.workspace, name="test teardown"))
    deadline = time.monotonic() + JOBS_END_SECONDS
    while True:
        left = list(active.values_list("pk", "runner"))  # a new query each time
        for job_id, runner in left:
            if not runner or runner_gone(runner):  # no process can end it, or write for it
                job_finish(job_id, JobStatus.CANCELLED)
        if not left:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"{test}: jobs still active {JOBS_END_SECONDS} s after their cancel: {left}"
            )
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def rate_limits_start_empty() -> None:
    """Each test's writes are counted from nothing: the limiter's counts live on the bus
    (or in this process without one), not in the database each test rolls back."""
    from matrixcloud.lib import ratelimit

    ratelimit.forget_all()
