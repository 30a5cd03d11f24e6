"""The API guard: body limit, Host, Origin and Content-Type checks, JSON fallbacks."""

import pytest

pytestmark = pytest.mark.django_db


def test_unknown_v1_path_is_json_404_for_any_method(api):
    for method in ("get", "post", "put", "delete"):
        response = getattr(api, method)("/v1/nope")
        assert response.status_code == 404
        assert response.json() == {"error": "no such endpoint: /v1/nope", "status": 404}


def test_oversized_body_is_413_before_it_is_read(api):
    body = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    response = api.generic("POST", "/v1/health", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["status"] == 413
    assert "too large" in response.json()["error"]


def test_foreign_host_header_is_refused(api):
    response = api.get("/v1/health", HTTP_HOST="rebind.example.com")
    assert response.status_code == 400
    assert response.json()["status"] == 400


def test_write_from_foreign_origin_is_refused(api):
    response = api.post(
        "/v1/auth/login", {"email": "a@b.c"}, format="json", HTTP_ORIGIN="http://evil.test"
    )
    assert response.status_code == 403
    assert "cross-origin" in response.json()["error"]


def test_write_from_same_origin_is_not_refused_by_the_guard(api):
    response = api.post("/v1/nope", {"a": 1}, format="json", HTTP_ORIGIN="http://testserver")
    assert response.status_code == 404


def test_write_with_non_json_body_is_415(api):
    response = api.generic("POST", "/v1/nope", "a=1", content_type="text/plain")
    assert response.status_code == 415
    assert response.json() == {"error": "request body must be application/json", "status": 415}


@pytest.mark.parametrize("path", ["/admin/login/", "/nope-outside-api"])
def test_guard_leaves_non_api_paths_alone(client, path):
    response = client.post(path, "a=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code != 415
