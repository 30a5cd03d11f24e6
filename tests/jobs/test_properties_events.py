"""Properties of job events and results (``jobs/events.py``, ``jobs/services.py``):
whatever text a program we do not control hands us (a server's stderr line, a tool's
answer), the event is stored and the job ends.

Regression: a NUL (or a lone surrogate) in an event's message or data failed the insert
on PostgreSQL (text and jsonb refuse ``\\u0000``), so the event was lost and the emitter
crashed. Now each such character is stored as U+FFFD; everything else is kept as is.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from jobs.choices import JobStatus
from jobs.events import REPLACEMENT, job_event_emit, storable
from jobs.models import Job, JobEvent
from jobs.services import job_finish
from tests.jobs.test_sse import make_job
from tests.properties import bounded

pytestmark = pytest.mark.django_db

BOUNDED = bounded(40, HealthCheck.function_scoped_fixture)
TEXT = st.lists(
    st.one_of(st.text(max_size=6), st.sampled_from(["\x00", "\ud800", "\udfff", "?", "é"])),
    max_size=5,
).map("".join)
DATA = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**31), 2**31), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=10,
)


def clean(text: str) -> str:
    return "".join(REPLACEMENT if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text)


def cleaned(value: Any) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(key): cleaned(item) for key, item in value.items()}
    if isinstance(value, list):
        return [cleaned(item) for item in value]
    return value


@BOUNDED
@given(TEXT.filter(bool), st.dictionaries(TEXT, DATA, max_size=4))
def test_any_event_text_is_stored(message: str, data: dict[str, Any]) -> None:
    job = make_job()
    event = job_event_emit(job.pk, step="log", status="running", message=message, data=data)
    stored = JobEvent.objects.get(pk=event.pk)
    assert stored.message == clean(message)
    assert stored.data == (cleaned(data) if data else None)
    assert storable(stored.data) == stored.data


def test_clean_text_is_untouched() -> None:
    data = {"a": ["x?", "é", 1, None, {"b": "\U0001f600"}]}
    assert storable(data) == data
    assert storable("what? \U0001f600") == "what? \U0001f600"


@BOUNDED
@given(DATA, TEXT)
def test_any_result_or_error_ends_the_job(result: Any, error: str) -> None:
    """Regression: a NUL in a handler's result failed the update on PostgreSQL, so the
    job was never finished (left running until its TTL)."""
    done, failed = make_job(), make_job()
    assert job_finish(done.pk, JobStatus.COMPLETE, result=result)
    assert job_finish(failed.pk, JobStatus.ERROR, error=error)
    done.refresh_from_db()
    failed.refresh_from_db()
    assert done.status == JobStatus.COMPLETE
    assert done.result == cleaned(result)
    assert failed.status == JobStatus.ERROR
    assert failed.error == (clean(error) or "Job failed")
    assert Job.objects.filter(pk__in=[done.pk, failed.pk], finished_at__isnull=True).count() == 0
