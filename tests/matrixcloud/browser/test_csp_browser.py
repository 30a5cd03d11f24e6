"""The console, /docs and the Django admin in a real Chromium under the server's
Content-Security-Policy: each page loads and its scripts do their work with no
violation (the conftest's ``no_csp_violations`` fails the test on any), and a script an
attacker gets into a page is refused by the browser, not just absent from templates.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from accounts.models import User
from tests.factories import PASSWORD
from tests.matrixcloud.browser.conftest import Console, shot
from tests.matrixcloud.browser.test_console_browser import sign_up

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

INJECT = """() => {
  const script = document.createElement("script");
  script.textContent = "window.__pwned = 'script';";
  document.body.append(script);
  const img = document.createElement("img");
  img.setAttribute("src", "/no-such-image");
  img.setAttribute("onerror", "window.__pwned = 'handler'");
  document.body.append(img);
  const link = document.createElement("a");
  link.href = "javascript:window.__pwned = 'link'";
  link.id = "pwn";
  link.textContent = "pwn";
  document.body.append(link);
}"""


def policy(page: Page, path: str, console: Console) -> str:
    response = page.goto(f"{console.url}{path}")
    assert response is not None, path
    assert response.ok, (path, response.status)
    return response.headers["content-security-policy"]


def test_console_pages_load_and_script_under_the_policy(console: Console) -> None:
    page = sign_up(console, "Strict Policy", "csp@console.test")  # the sign-up form posted
    assert "script-src 'self';" in policy(page, "/console/", console)
    # The scripted features (live events, schema-built forms, the terminal) are the
    # walk in test_console_browser.py, which the conftest also holds to no violation.
    page.get_by_role("link", name="Catalog").click()
    expect(page.get_by_role("heading", name="Catalog")).to_be_visible()
    launch = page.get_by_role("button", name="Launch Everything MCP Server in a sandbox")
    expect(launch).to_be_visible()
    for path in ("/console/sandboxes", "/console/jobs", "/console/models", "/console/audit"):
        assert "unsafe" not in policy(page, path, console)
    page.goto(f"{console.url}/console/sandboxes/sbx_missing")  # the console's error page
    expect(page.get_by_role("heading")).to_have_count(1)


def test_the_docs_page_renders_the_schema_under_the_policy(console: Console) -> None:
    page = console.page()
    assert "style-src 'self';" in policy(page, "/docs", console)
    # docs.js fetched /openapi.yaml and built the operations and the nav from it.
    expect(page.locator("main section.op").first).to_be_visible()
    assert page.locator("nav a").count() > 20
    expect(page.locator("#error")).to_have_count(0)
    # docs.css applied: the layout is the stylesheet's two-column grid.
    assert page.evaluate("getComputedStyle(document.querySelector('.layout')).display") == "grid"
    shot(page, "csp-docs")


def test_the_admin_signs_in_and_its_scripts_run_under_the_policy(console: Console) -> None:
    User.objects.create_superuser(email="op@csp.test", password=PASSWORD)
    page = console.page()
    assert "frame-ancestors 'none'" in policy(page, "/admin/login/", console)
    page.locator("#id_username").fill("op@csp.test")
    page.locator("#id_password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
    # admin/js/theme.js ran (it sets the theme on load) and its toggle answers a click.
    assert page.evaluate("document.documentElement.dataset.theme") == "auto"
    page.locator("button.theme-toggle").first.click()
    assert page.evaluate("document.documentElement.dataset.theme") != "auto"
    page.locator("a.addlink").first.click()  # a change form, with its widgets' scripts
    expect(page.locator("form input[type=submit]").first).to_be_visible()
    shot(page, "csp-admin-add")


def test_a_script_injected_into_a_console_page_does_not_run(console: Console) -> None:
    """The attack: markup reaches a page (a stored XSS); the browser refuses to run it."""
    page = sign_up(console, "Mallory", "mallory@console.test")
    page.evaluate(INJECT)
    page.locator("#pwn").click()
    for _ in range(50):  # the three refusals arrive as events: wait up to 5 s for them
        if len(console.violations) >= 3:
            break
        page.wait_for_timeout(100)
    assert page.evaluate("window.__pwned === undefined")
    expect(page).to_have_url(f"{console.url}/console/")
    blocked = list(console.violations)
    assert any("script-src" in v and "inline" in v for v in blocked), blocked
    console.violations.clear()  # the expected ones; the conftest checks for any others
