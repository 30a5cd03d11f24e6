"""Usage metering: the service records what metered actions did, the API sums it per kind
over a window, per workspace only."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.choices import UsageKind
from accounts.models import UsageEvent
from accounts.services.usage import (
    Usage,
    usage_record,
    usage_record_many,
    usage_since,
    usage_summary,
)
from tests import factories
from tests.factories import bearer, error, issue

pytestmark = pytest.mark.django_db

cast = factories.cast
clock = factories.clock


def usage(api: Any, token: str, query: str = "") -> Any:
    return api.get(f"/v1/cloud/usage{query}", **bearer(token))


# --- the service --------------------------------------------------------------------


def test_three_inspections_sum_to_three_in_the_last_hour(cast):  # T80
    for _ in range(3):
        usage_record(workspace=cast.workspace, kind=UsageKind.MODEL_INSPECT, user=cast.owner)
    assert usage_summary(workspace=cast.workspace, days=1) == {"model.inspect": 3}
    assert usage_summary(workspace=cast.other_workspace) == {}


def test_quantities_sum_per_kind_and_workspace(cast):
    usage_record(workspace=cast.workspace, kind="model.pull", quantity=1_500_000_000)
    usage_record(workspace=cast.workspace.pk, kind="model.pull", quantity=2_000_000_000)
    usage_record(workspace=cast.workspace, kind="llm.tokens", quantity=512, runtime_id="rt_x")
    usage_record(workspace=cast.other_workspace, kind="llm.tokens", quantity=7)
    written = usage_record_many(
        [Usage(workspace_id=cast.workspace.pk, kind="tool.call", quantity=4)] * 2
    )
    assert written == 2
    assert usage_summary(workspace=cast.workspace) == {
        "llm.tokens": 512,
        "model.pull": 3_500_000_000,
        "tool.call": 8,
    }
    assert usage_summary(workspace=cast.other_workspace) == {"llm.tokens": 7}
    assert UsageEvent.objects.get(kind="llm.tokens", workspace=cast.workspace).runtime_id == "rt_x"


@pytest.mark.parametrize(
    ("kind", "quantity", "message"),
    [
        ("model.nope", 1, "unknown usage kind 'model.nope'"),
        ("tool.call", 0, "usage quantity must be at least 1"),
        ("tool.call", -5, "usage quantity must be at least 1"),
        ("tool.call", 1.5, "usage quantity must be an integer"),
        ("tool.call", True, "usage quantity must be an integer"),
    ],
)
def test_a_bad_kind_or_quantity_is_refused_and_nothing_is_written(cast, kind, quantity, message):
    with pytest.raises(ValueError, match=message):
        usage_record(workspace=cast.workspace, kind=kind, quantity=quantity)
    with pytest.raises(ValueError, match=message):
        usage_record_many(
            [
                Usage(workspace_id=cast.workspace.pk, kind="tool.call"),
                Usage(workspace_id=cast.workspace.pk, kind=kind, quantity=quantity),
            ]
        )
    assert not UsageEvent.objects.exists()


def test_old_events_fall_out_of_the_window(cast, clock):
    usage_record(workspace=cast.workspace, kind="sandbox.start")
    clock.advance(days=20)
    usage_record(workspace=cast.workspace, kind="sandbox.start")
    clock.advance(days=11)
    usage_record(workspace=cast.workspace, kind="sandbox.start")

    assert usage_summary(workspace=cast.workspace) == {"sandbox.start": 2}
    assert usage_summary(workspace=cast.workspace, days=1) == {"sandbox.start": 1}
    assert usage_summary(workspace=cast.workspace, days=31) == {"sandbox.start": 3}


def test_recording_is_one_insert(cast):
    with CaptureQueriesContext(connection) as captured:
        usage_record(workspace=cast.workspace, kind="tool.call")
    inserts = [q for q in captured.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1
    assert len(captured) <= 3  # the insert, and a savepoint pair at most


# --- GET /v1/cloud/usage ------------------------------------------------------------


def test_the_endpoint_sums_the_last_30_days(api, cast, clock):
    usage_record(workspace=cast.workspace, kind="model.inspect")
    clock.advance(days=5)
    usage_record(workspace=cast.workspace, kind="model.inspect")
    usage_record(workspace=cast.workspace, kind="model.pull", quantity=1024)
    usage_record(workspace=cast.other_workspace, kind="model.pull", quantity=1)

    response = usage(api, issue(cast.member))

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "since": (clock.now - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "usage": {"model.inspect": 2, "model.pull": 1024},
    }
    assert set(body) == {"since", "usage"}


def test_days_narrows_the_window(api, cast, clock):
    usage_record(workspace=cast.workspace, kind="tool.call", quantity=3)
    clock.advance(days=2)
    usage_record(workspace=cast.workspace, kind="tool.call")

    body = usage(api, issue(cast.owner), "?days=1").json()
    assert body["usage"] == {"tool.call": 1}
    assert body["since"] == (clock.now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert usage(api, issue(cast.owner), "?days=365").json()["usage"] == {"tool.call": 4}


@pytest.mark.parametrize("days", ["0", "366", "-1", "abc", "1.5", ""])
def test_a_bad_days_is_a_400(api, cast, days):
    if days == "":
        assert usage(api, issue(cast.owner), "?days=").status_code == 200
        return
    response = usage(api, issue(cast.owner), f"?days={days}")
    assert response.status_code == 400
    assert response.json() == error("days must be an integer between 1 and 365", 400)


def test_an_empty_workspace_has_empty_usage(api, cast):
    assert usage(api, issue(cast.outsider)).json()["usage"] == {}


def test_usage_needs_a_session(api, settings):
    settings.MATRIX_API_TOKEN = "operator-token-for-usage-tests-01234567"
    response = api.get("/v1/cloud/usage")
    assert response.status_code == 401
    assert response.json() == error("authentication required", 401)


def test_usage_is_read_only(api, cast):
    response = api.post("/v1/cloud/usage", {}, **bearer(issue(cast.owner)))
    assert response.status_code == 405
    assert response.json() == error('Method "POST" not allowed.', 405)


def test_the_window_starts_days_before_now():
    now = timezone.now()
    assert usage_since(30, now=now) == now - timedelta(days=30)
    for bad in (0, 366, True):
        with pytest.raises(ValueError, match="days must be an integer between 1 and 365"):
            usage_since(bad)
