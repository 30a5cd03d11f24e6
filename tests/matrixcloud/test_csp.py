"""Content-Security-Policy: every page this server renders (console, admin, /docs, error
pages) carries the strict policy, and no template needs an inline script to work.

An attacker who gets markup into a page (a stored name, a reflected parameter) gets a
``<script>`` or an ``onerror=`` that the browser refuses to run. The browser's side of
it (the pages really work under the policy, an injected script really is blocked) is
``tests/matrixcloud/browser/test_csp_browser.py``.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts.models import User
from tests import REPO_ROOT, factories
from tests.factories import PASSWORD
from tests.matrixcloud.test_console import PAGES, signed_in

pytestmark = pytest.mark.django_db

cast = factories.cast
REPO = REPO_ROOT
STRICT = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
# Markup that runs script or sets style without a file: a <script> with a body (or with
# no src at all), an on*= handler, a javascript: URL, a <style> block, a style= attribute.
INLINE = {
    "inline <script>": re.compile(r"<script(?![^>]*\ssrc=)[^>]*>", re.I),
    "on*= handler": re.compile(r"<[^>]*\son[a-z]+\s*=", re.I),
    "javascript: URL": re.compile(r"javascript:", re.I),
    "<style> block": re.compile(r"<style[\s>]", re.I),
    "style= attribute": re.compile(r"<[^>]*\sstyle\s*=", re.I),
}


def policy_of(response: object) -> dict[str, str]:
    header = response["Content-Security-Policy"]  # type: ignore[index]
    directives = (part.strip().split(None, 1) for part in header.split(";") if part.strip())
    return {d[0]: (d[1] if len(d) > 1 else "") for d in directives}


def assert_strict(response: object) -> None:
    assert response["Content-Type"].startswith("text/html")  # type: ignore[index]
    policy = policy_of(response)
    assert policy == STRICT, policy
    assert "unsafe" not in response["Content-Security-Policy"]  # type: ignore[index]


@pytest.fixture
def owner(cast: factories.Cast) -> Client:
    return signed_in(cast.owner)


@pytest.mark.parametrize("path", ["/signup", "/login", "/forgot"])
def test_the_sign_up_and_sign_in_pages_carry_the_strict_policy(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert_strict(response)


def test_every_console_page_carries_the_strict_policy(owner: Client) -> None:
    for path in PAGES:
        response = owner.get(path)
        assert response.status_code == 200, (path, response.status_code)
        assert_strict(response)
    refused = owner.get("/console/shell")  # MatrixShell is off here: the console's 403 page
    assert refused.status_code == 403
    assert_strict(refused)


def test_the_admin_login_and_index_carry_the_strict_policy() -> None:
    client = Client()
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert_strict(response)
    User.objects.create_superuser(email="op@csp.test", password=PASSWORD)
    assert client.login(username="op@csp.test", password=PASSWORD)
    response = client.get("/admin/")
    assert response.status_code == 200
    assert_strict(response)


def test_the_docs_page_carries_the_strict_policy_and_loads_its_script_as_a_file(
    client: Client,
) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert_strict(response)
    html = response.content.decode()
    sources = re.findall(r'<script src="([^"]+)"', html)
    assert sources == ["/static/docs/docs.js"], sources
    script = client.get(sources[0])
    assert script.status_code == 200
    assert b"/openapi.yaml" in b"".join(script.streaming_content)  # type: ignore[attr-defined]


def test_error_pages_carry_the_strict_policy(owner: Client, client: Client) -> None:
    missing = client.get("/no-such-page")
    assert missing.status_code == 404
    assert_strict(missing)
    refused = owner.get("/console/sandboxes/sbx_missing")
    assert refused.status_code == 404
    assert_strict(refused)


def test_api_answers_carry_a_policy_that_runs_nothing(api: object) -> None:
    for path in ("/v1/health", "/v1/nope"):
        response = api.get(path)  # type: ignore[attr-defined]
        assert response["Content-Type"].startswith("application/json")
        assert policy_of(response) == {"default-src": "'none'", "frame-ancestors": "'none'"}


def test_no_template_holds_inline_script_handlers_or_style() -> None:
    found = [
        f"{path.relative_to(REPO)}: {name}: {match.group(0)[:60]!r}"
        for path in sorted((REPO / "templates").rglob("*.html"))
        for name, pattern in INLINE.items()
        for match in pattern.finditer(path.read_text())
    ]
    assert found == []


def test_no_console_python_emits_inline_script_or_handlers() -> None:
    found = [
        f"{path.relative_to(REPO)}: {name}"
        for path in sorted((REPO / "matrixcloud" / "console").rglob("*.py"))
        for name, pattern in INLINE.items()
        if pattern.search(path.read_text())
    ]
    assert found == []


def test_the_scan_would_see_each_kind_of_inline_markup() -> None:
    """The patterns are the test: each one catches what it names, not the allowed form."""
    samples = {
        "inline <script>": "<script>alert(1)</script>",
        "on*= handler": '<img src="x" onerror="alert(1)">',
        "javascript: URL": '<a href="javascript:alert(1)">x</a>',
        "<style> block": "<style>body{}</style>",
        "style= attribute": '<p style="color:red">x</p>',
    }
    for name, sample in samples.items():
        assert INLINE[name].search(sample), name
    allowed = '<script src="/static/console/console.js" defer></script><a href="/x">on=</a>'
    assert not any(pattern.search(allowed) for pattern in INLINE.values())
