"""The gate: who may use gated endpoints, and in which workspace they act."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import AuditEvent
from accounts.services import local_workspace
from matrixcloud.api.permissions import SESSION_REQUIRED
from tests import factories
from tests.factories import error

pytestmark = pytest.mark.django_db
cast = factories.cast
TOKEN = "operator-token-for-gate-tests-0123456789abcdef"


def anonymous(ip: str = "127.0.0.1") -> APIClient:
    return APIClient(REMOTE_ADDR=ip)


def test_local_dev_loopback_anonymous_is_the_owner_of_the_local_workspace() -> None:
    """It passes the gate where the original let it (jobs) and acts in the local
    workspace as ``local-dev``; the workspace endpoints (audit) are not among those."""
    response = anonymous().post("/v1/jobs", {"type": "no.such"}, format="json")
    assert response.json() == error('unknown job type: "no.such"', 400)  # through the gate
    body = {"type": "model.inspect", "payload": {"model": "hf:acme/tiny"}}
    created = anonymous().post("/v1/jobs", body, format="json")
    assert created.status_code == 202, created.content
    record = AuditEvent.objects.get(action="job.created", target=created.json()["job_id"])
    assert (record.actor, record.workspace_id) == ("local-dev", local_workspace().pk)
    audit = anonymous().get("/v1/cloud/audit")
    assert audit.json() == error(SESSION_REQUIRED, 401)


def test_local_dev_anonymous_from_another_host_is_refused() -> None:
    response = anonymous("192.0.2.10").get("/v1/jobs")
    assert response.status_code == 401
    assert response.json() == error("authentication required", 401)


def test_an_operator_token_closes_anonymous_access(settings: Any) -> None:
    settings.MATRIX_API_TOKEN = TOKEN
    assert anonymous().get("/v1/jobs").json() == error("authentication required", 401)
    wrong = anonymous().get("/v1/jobs", HTTP_AUTHORIZATION="Bearer not-the-token")
    assert wrong.json() == error("missing or invalid bearer token", 401)
    right = anonymous("192.0.2.10").get("/v1/jobs", HTTP_AUTHORIZATION=f"bEaReR {TOKEN}")
    assert right.status_code == 200


@pytest.mark.parametrize("mode", ["customer-agent", "cloud-worker", "hf-space"])
def test_production_modes_never_allow_anonymous_access(settings: Any, mode: str) -> None:
    settings.MATRIX_MODE = mode
    assert anonymous().get("/v1/jobs").json() == error("authentication required", 401)


def test_the_operator_acts_in_a_named_workspace(settings: Any, cast: Any) -> None:
    settings.MATRIX_API_TOKEN = TOKEN
    auth = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    named = anonymous().get("/v1/cloud/audit", HTTP_X_MATRIX_WORKSPACE=cast.workspace.slug, **auth)
    assert named.status_code == 200
    assert {event["workspace_id"] for event in named.json()["events"]} == {cast.workspace.pk}
    unknown = anonymous().get("/v1/cloud/audit", HTTP_X_MATRIX_WORKSPACE="nope", **auth)
    assert unknown.json() == error("no workspace 'nope'", 404)


def test_a_users_session_is_never_the_operator(cast: Any) -> None:
    """On a local-dev loopback a signed-in member is still only a member."""
    token = factories.issue(cast.member)
    response = anonymous().get("/v1/cloud/audit", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 403


@pytest.mark.parametrize("mode", ["local-dev", "customer-agent", "cloud-worker", "hf-space"])
@pytest.mark.parametrize("path", ["/v1/model-profiles", "/v1/model-installations"])
def test_model_profiles_need_a_session_in_every_mode(settings: Any, mode: str, path: str) -> None:
    """The contract documents 401 for these; the original's local-dev answered 200 and an
    empty list (docs/COMPATIBILITY.md#f-09)."""
    settings.MATRIX_MODE = mode
    expected = SESSION_REQUIRED if mode == "local-dev" else "authentication required"
    assert anonymous().get(path).json() == error(expected, 401)
    posted = anonymous().post(path, {"external_id": "acme/tiny"}, format="json")
    assert posted.json() == error(expected, 401)  # the gate answers before the method


def test_another_workspace_named_by_the_local_dev_caller_is_a_404(cast: Any) -> None:
    """The same answer whether the workspace exists or not: no oracle, no data."""
    for wanted in (cast.workspace.slug, cast.workspace.pk, "nope"):
        response = anonymous().get("/v1/jobs", HTTP_X_MATRIX_WORKSPACE=wanted)
        assert response.status_code == 404
        assert response.json()["error"].startswith(f"no workspace {wanted!r} for this caller")
    assert anonymous().get("/v1/jobs", HTTP_X_MATRIX_WORKSPACE="local").status_code == 200
