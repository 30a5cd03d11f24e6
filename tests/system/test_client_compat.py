"""The original Python client's auth calls, over real HTTP against a live server.

``OriginalClient`` sends exactly what ``matrixcloud.MatrixCloud`` 0.1.0 sends
(docs/COMPATIBILITY.md#c-15): JSON bodies as httpx ``json=`` encodes them,
``Accept: application/json``, ``Authorization: Bearer <token>`` once it has one,
``workspace: null`` in signup, ``{}`` as
the logout body and ``?all=true`` for logout-all; and it reads responses the way the
client does (401/403 raise ``AuthError``). httpx is not in this venv, so it uses urllib.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from accounts.models import SessionToken, User
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


class MatrixCloudError(Exception):
    def __init__(self, message: str, status: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.data = data


class AuthError(MatrixCloudError):
    pass


class OriginalClient:
    """The transport and auth methods of the original ``MatrixCloud`` client."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.sent: list[urllib.request.Request] = []

    def _request(self, method: str, path: str, json_body: Any = None) -> Any:
        headers = {"Accept": "application/json", "User-Agent": "python-httpx/0.27.0"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if json_body is not None:  # httpx json=: json.dumps, utf-8, application/json
            data = json.dumps(json_body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        url = self.base_url + path  # http://localhost:<port> of the live server
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        self.sent.append(request)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        text = raw.decode("utf-8")
        try:
            parsed: Any = json.loads(text) if text else None
        except ValueError:
            parsed = text
        if status >= 400:
            message = (
                str(parsed.get("error")) if isinstance(parsed, dict) else text or f"HTTP {status}"
            )
            error_class = AuthError if status in (401, 403) else MatrixCloudError
            raise error_class(message, status=status, data=parsed)
        return parsed

    def signup(self, name: str, email: str, password: str, workspace: str | None = None) -> Any:
        body = {"name": name, "email": email, "password": password, "workspace": workspace}
        data = self._request("POST", "/v1/auth/signup", body)
        if isinstance(data, dict) and data.get("token"):
            self.token = data["token"]
        return data

    def login(self, email: str, password: str) -> Any:
        data = self._request("POST", "/v1/auth/login", {"email": email, "password": password})
        if isinstance(data, dict) and data.get("token"):
            self.token = data["token"]
        return data

    def me(self) -> dict[str, Any]:
        return self._request("GET", "/v1/auth/me")["user"]

    def logout(self, all_sessions: bool = False) -> None:
        path = "/v1/auth/logout?all=true" if all_sessions else "/v1/auth/logout"
        self._request("POST", path, {})
        self.token = None


def test_the_original_clients_auth_calls_work(live_server):
    client = OriginalClient(live_server.url + "/")

    signed_up = client.signup("Ada Lovelace", "Ada@Analytical.test", PASSWORD)
    sent = client.sent[-1]
    assert json.loads(sent.data) == {
        "name": "Ada Lovelace",
        "email": "Ada@Analytical.test",
        "password": PASSWORD,
        "workspace": None,
    }
    assert sent.get_header("Content-type") == "application/json"
    assert signed_up["user"]["workspace"] == "Ada Lovelace's workspace"
    assert signed_up["user"]["email"] == "ada@analytical.test"
    assert signed_up["user"]["role"] == "Owner"
    first = client.token
    assert first == signed_up["token"]

    me = client.me()
    assert client.sent[-1].get_header("Authorization") == f"Bearer {first}"
    assert {key: me[key] for key in ("name", "email", "role", "workspace")} == {
        "name": "Ada Lovelace",
        "email": "ada@analytical.test",
        "role": "Owner",
        "workspace": "Ada Lovelace's workspace",
    }

    logged_in = client.login("ada@analytical.test", PASSWORD)
    second = client.token
    assert second == logged_in["token"] != first
    assert logged_in["user"] == signed_up["user"]

    client.logout()
    assert client.sent[-1].data == b"{}"
    assert client.token is None
    with pytest.raises(AuthError) as ended:
        OriginalClient(live_server.url, token=second).me()
    assert (ended.value.status, ended.value.data) == (
        401,
        {"error": "not authenticated", "status": 401},
    )
    assert OriginalClient(live_server.url, token=first).me()["email"] == "ada@analytical.test"


def test_the_original_clients_logout_all_and_errors(live_server):
    client = OriginalClient(live_server.url)
    client.signup("Grace Hopper", "grace@navy.test", PASSWORD, workspace="Compilers")
    assert client.me()["workspace"] == "Compilers"
    tokens = [client.token]
    for _ in range(2):
        client.login("grace@navy.test", PASSWORD)
        tokens.append(client.token)

    client.logout(all_sessions=True)
    assert client.sent[-1].full_url.endswith("/v1/auth/logout?all=true")
    assert client.sent[-1].data == b"{}"
    for token in tokens:
        with pytest.raises(AuthError):
            OriginalClient(live_server.url, token=token).me()
    user = User.objects.get(email="grace@navy.test")
    assert not SessionToken.objects.filter(user=user, revoked_at__isnull=True).exists()

    with pytest.raises(AuthError) as wrong:
        client.login("grace@navy.test", "not her password")
    assert (wrong.value.status, str(wrong.value)) == (401, "invalid email or password")
    with pytest.raises(AuthError) as anonymous:
        client.me()
    assert anonymous.value.status == 401
    with pytest.raises(MatrixCloudError) as taken:
        client.signup("Grace Again", "GRACE@navy.test", PASSWORD)
    assert not isinstance(taken.value, AuthError)
    assert (taken.value.status, str(taken.value)) == (
        409,
        "an account with this email already exists",
    )
    assert client.token is None
