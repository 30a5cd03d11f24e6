"""Every non-platform contract operation is routed and answers in the error shape.

Bad bodies are 400s before any work is done. A
wrong method is a JSON 405, malformed JSON a 400 (asked as a signed-in user), in a
production mode only the endpoints the contract leaves open answer anonymous callers,
and in local-dev the anonymous loopback caller is refused where the original refused it
(its session-only endpoints).
"""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from matrixcloud.api.permissions import SESSION_REQUIRED
from tests.factories import signup
from tests.matrixcloud.test_contract_schema import OPERATIONS

pytestmark = pytest.mark.django_db

PLATFORM_PATHS = {
    "/v1/health",
    "/v1/version",
    "/v1/ready",
    "/v1/capabilities",
    "/v1/system/storage",
    "/v1/policies",
    "/v1/runtimes",
    "/v1/catalog",
}
SAMPLE_IDS = {"{job_id}": "job_0123456789abcdef01", "{session_id}": "sbx_0123456789abcdef01"}
SAMPLE_IDS["{id}"] = "mp_0123456789abcdef"

# (method, contract path, a valid body, required fields of the body)
SURFACE: list[tuple[str, str, dict[str, Any] | None, tuple[str, ...]]] = [
    (
        "post",
        "/v1/auth/signup",
        {"name": "Maya Chen", "email": "maya@example.com", "password": "correct horse"},
        ("name", "email", "password"),
    ),
    (
        "post",
        "/v1/auth/login",
        {"email": "maya@example.com", "password": "pw"},
        ("email", "password"),
    ),
    ("get", "/v1/auth/me", None, ()),
    ("post", "/v1/auth/logout", None, ()),
    ("post", "/v1/auth/forgot", {"email": "maya@example.com"}, ("email",)),
    (
        "post",
        "/v1/auth/reset",
        {"token": "mxpr_x", "password": "a new password"},
        ("token", "password"),
    ),
    ("post", "/v1/auth/verify", {"token": "mxev_x"}, ("token",)),
    ("get", "/v1/cloud/providers", None, ()),
    (
        "post",
        "/v1/cloud/providers",
        {"provider": "huggingface", "secret": "hf_x"},
        ("provider", "secret"),
    ),
    ("get", "/v1/cloud/usage", None, ()),
    ("get", "/v1/cloud/audit", None, ()),
    ("get", "/v1/cloud/runtimes", None, ()),
    ("post", "/v1/cloud/runtimes/register", {"join_token": "mxrt_x"}, ("join_token",)),
    ("post", "/v1/cloud/runtimes/heartbeat", {"status": "online", "caps": []}, ()),
    ("get", "/v1/cloud/join-tokens", None, ()),
    ("post", "/v1/cloud/join-tokens", {"label": "space", "max_uses": 1}, ()),
    ("get", "/v1/jobs", None, ()),
    ("post", "/v1/jobs", {"type": "mcp.test", "payload": {"x": None}}, ("type",)),
    ("get", "/v1/jobs/{job_id}", None, ()),
    ("delete", "/v1/jobs/{job_id}", None, ()),
    ("get", "/v1/jobs/{job_id}/events", None, ()),
    ("get", "/v1/model-sources/huggingface/search", None, ()),
    ("post", "/v1/model-sources/resolve", {"model": "hf:Qwen/Qwen2.5-7B-Instruct"}, ()),
    ("get", "/v1/model-profiles", None, ()),
    ("post", "/v1/model-profiles", {"external_id": "Qwen/Qwen2.5", "tags": ["llm"]}, ()),
    ("post", "/v1/model-profiles/{id}/attach", {"runtimeId": "rt_local"}, ("runtimeId",)),
    ("get", "/v1/model-installations", None, ()),
    (
        "post",
        "/v1/sandbox/sessions",
        {"start_command": "npx -y @modelcontextprotocol/server-everything", "env": {}},
        ("start_command",),
    ),
    ("get", "/v1/sandbox/sessions/{session_id}", None, ()),
    ("delete", "/v1/sandbox/sessions/{session_id}", None, ()),
    ("get", "/v1/sandbox/sessions/{session_id}/events", None, ()),
    ("get", "/v1/sandbox/sessions/{session_id}/tools", None, ()),
    (
        "post",
        "/v1/sandbox/sessions/{session_id}/tools/call",
        {"name": "echo", "arguments": {"message": "hi"}},
        ("name",),
    ),
    ("get", "/v1/matrixshell/status", None, ()),
    ("post", "/v1/matrixshell/install", None, ()),
    ("post", "/v1/matrixshell/exec", {"command": "ls -la"}, ("command",)),
]
# Answer anonymous callers in every mode: the contract's security: [] and all of /v1/auth/.
OPEN_PATHS = {
    "/v1/auth/signup",
    "/v1/auth/login",
    "/v1/auth/me",
    "/v1/auth/logout",
    "/v1/auth/forgot",
    "/v1/auth/reset",
    "/v1/auth/verify",
    "/v1/cloud/runtimes/register",
    "/v1/cloud/runtimes/heartbeat",
    "/v1/model-sources/huggingface/search",
}
# The original's session-only endpoints (docs/COMPATIBILITY.md#c-05): 401 for the
# anonymous local-dev caller too, although it passes the gate elsewhere.
SESSION_ONLY_PATHS = {
    "/v1/cloud/providers",
    "/v1/cloud/usage",
    "/v1/cloud/audit",
    "/v1/cloud/runtimes",
    "/v1/cloud/join-tokens",
    "/v1/model-profiles",
    "/v1/model-profiles/{id}/attach",
    "/v1/model-installations",
}
# Endpoints that ignore their body, as in the original (docs/COMPATIBILITY.md#c-03).
BODYLESS_POSTS = {"/v1/auth/logout", "/v1/matrixshell/install"}


def url(path: str) -> str:
    for placeholder, value in SAMPLE_IDS.items():
        path = path.replace(placeholder, value)
    return path


def call(api: APIClient, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    if body is None:
        return getattr(api, method)(url(path))
    return getattr(api, method)(url(path), body, format="json")


def assert_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    payload = response.json()
    assert set(payload) == {"error", "status"}
    assert payload["status"] == status
    assert isinstance(payload["error"], str)
    assert payload["error"]
    return payload


@pytest.fixture
def caller(api: APIClient) -> APIClient:
    """The API client signed in as the Owner of a fresh workspace."""
    _, _, token = signup("Maya Chen", "maya.surface@example.test", "Surface")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api


def _id(method: str, path: str) -> str:
    return f"{method.upper()} {path}"


ALL = [pytest.param(m, p, b, id=_id(m, p)) for m, p, b, _ in SURFACE]
WITH_BODY = [
    pytest.param(m, p, id=_id(m, p))
    for m, p, _, _ in SURFACE
    if m == "post" and p not in BODYLESS_POSTS
]
WITH_REQUIRED = [pytest.param(m, p, r, id=_id(m, p)) for m, p, _, r in SURFACE if r]
PATHS = sorted({p for _, p, _, _ in SURFACE})


def test_surface_is_the_contract_without_platform_endpoints() -> None:
    expected = {(m, p) for p, m in OPERATIONS if p not in PLATFORM_PATHS}
    assert {(m, p) for m, p, _, _ in SURFACE} == expected
    assert len(SURFACE) == 36


@pytest.mark.parametrize("path", PATHS)
def test_wrong_method_is_a_json_405(caller: APIClient, path: str) -> None:
    response = caller.put(url(path), {}, format="json")
    assert_error(response, 405)
    allowed = {m.upper() for m, p, _, _ in SURFACE if p == path}
    assert allowed <= {m.strip() for m in response["Allow"].split(",")}
    assert "PUT" not in response["Allow"]


@pytest.mark.parametrize(("method", "path"), WITH_BODY)
def test_malformed_json_is_a_400(caller: APIClient, method: str, path: str) -> None:
    response = caller.generic(
        method.upper(), url(path), '{"name": ', content_type="application/json"
    )
    assert assert_error(response, 400)["error"].startswith("invalid JSON body")


@pytest.mark.parametrize(("method", "path", "required"), WITH_REQUIRED)
def test_missing_required_fields_are_a_400(
    caller: APIClient, method: str, path: str, required: tuple[str, ...]
) -> None:
    message = assert_error(call(caller, method, path, {}), 400)["error"]
    for field in required:
        assert f"{field}: This field is required." in message


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/v1/jobs", {"type": "mcp.test", "payload": "not an object"}, 400),
        ("post", "/v1/jobs", {"type": "mcp.test", "ttl_seconds": 1.5}, 400),
        ("post", "/v1/auth/signup", {"name": "M", "email": "nope", "password": "pw"}, 400),
        ("post", "/v1/model-profiles/{id}/attach", {"runtimeId": "rt", "installMode": "x"}, 400),
        ("post", "/v1/sandbox/sessions/{session_id}/tools/call", {"name": ""}, 400),
        # The job engine, not the serializer, decides which types exist.
        ("post", "/v1/jobs", {"type": "no.such.type"}, 400),
    ],
)
def test_bad_bodies_are_400s(
    caller: APIClient, method: str, path: str, body: dict[str, Any], status: int
) -> None:
    assert_error(call(caller, method, path, body), status)


@pytest.mark.parametrize(
    ("path", "status"),
    [("/v1/jobs/{job_id}/events", 404), ("/v1/sandbox/sessions/{session_id}/events", 404)],
)
def test_event_streams_answer_errors_in_json_to_sse_clients(
    api: APIClient, path: str, status: int
) -> None:
    response = api.get(url(path), HTTP_ACCEPT="text/event-stream")
    assert_error(response, status)


@pytest.mark.parametrize(("method", "path", "body"), ALL)
def test_production_mode_gate(
    api: APIClient, settings: Any, method: str, path: str, body: Any
) -> None:
    settings.MATRIX_MODE = "cloud-worker"
    response = call(api, method, path, body)
    if path in OPEN_PATHS:
        assert response.json().get("error") != "authentication required"
    else:
        assert assert_error(response, 401)["error"] == "authentication required"


@pytest.mark.parametrize(("method", "path", "body"), ALL)
def test_local_dev_anonymous_gate(api: APIClient, method: str, path: str, body: Any) -> None:
    """The anonymous loopback caller of local-dev: 401 exactly on the session-only
    endpoints, through the gate everywhere else (what it gets there is that view's: the
    open endpoints answer 401 by their own rules, e.g. /v1/auth/me)."""
    response = call(api, method, path, body)
    if path in SESSION_ONLY_PATHS:
        assert assert_error(response, 401)["error"] == SESSION_REQUIRED
    elif path in OPEN_PATHS:
        assert response.json().get("error") != SESSION_REQUIRED
    else:
        assert response.status_code != 401, response.content
