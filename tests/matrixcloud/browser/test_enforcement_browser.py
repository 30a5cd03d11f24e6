"""What sandboxes get here, as the console shows it, in a real browser.

The console's server runs on this host as it is (bubblewrap, and as root a cgroup per
sandbox and a disk quota: the production default, so no banner); a second web server
on the same database runs with a PATH that lacks ``bwrap``, as on a host that never
installed it, and its Overview and sandbox pages carry the banner with the command
that installs it here. A sandbox page shows an install's progress as one row that the
latest progress replaces, and refused connections by host:port with a count, live and
after a reload; the events come from the host's own event service (``events_emit``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django import db
from playwright.sync_api import Page, expect

from accounts.models import User
from sandbox.enforcement import Enforcement, enforcement_summary, install_command
from sandbox.host.records import events_emit
from sandbox.models import SandboxSession
from sandbox.services import sandbox_create
from tests.factories import PASSWORD, actor_of
from tests.jobs.test_jobs_worker import worker_env
from tests.jobs.test_sse import Server, start_daphne
from tests.matrixcloud.browser.conftest import Console, shot
from tests.matrixcloud.browser.test_console_browser import (
    DESKTOP,
    NO_SIDEWAYS_SCROLL,
    PHONE,
    WIDER_THAN_SCREEN,
)
from tests.sandbox.test_enforcement import path_without
from tests.sandbox_processes import npm_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

READY_TIMEOUT_MS = 50_000
PACKAGE = "npm:@modelcontextprotocol/server-everything"
PROGRESS_EVENTS = 150
BATCH = 10
EMITTER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emit")
TIMES = "\N{MULTIPLICATION SIGN}"  # before a count: example.com:443 x3


@pytest.fixture(scope="module")
def unisolated_web(console: Console, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second web server on the same database whose PATH has no ``bwrap``."""
    path = path_without("bwrap", tmp_path_factory.mktemp("no-bwrap") / "bin")
    database = {
        k: v for k, v in worker_env().items() if k in ("MATRIX_RUNTIME_DB_PATH", "DATABASE_URL")
    }
    server: Server = start_daphne({**database, "PATH": path, "MATRIX_RUNTIME_RATE_LIMIT_RPM": "0"})
    try:
        server.wait_ready()
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture
def served_summary(settings: Any) -> Enforcement:
    """What the console's server enforces: this host, with MatrixShell on (conftest)."""
    settings.MATRIX_MATRIXSHELL_ENABLED = True
    return enforcement_summary()


def emit(job_id: str, events: list[Any]) -> None:
    """``events_emit`` on a thread of its own: Playwright's loop holds this one, and the
    bus publish after commit is synchronous code that must not run inside a loop."""

    def run() -> None:
        try:
            events_emit(job_id, events)
        finally:
            db.connections.close_all()

    EMITTER.submit(run).result(timeout=30)


def sign_up(console: Console, base: str, name: str, email: str) -> Page:
    page = console.page()
    page.goto(f"{base}/signup")
    page.get_by_label("Your name").fill(name)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(f"{base}/console/")
    return page


def workspace_of(email: str) -> Any:
    return User.objects.get(email=email).memberships.get().workspace  # type: ignore[attr-defined]


def progress(n: int) -> tuple[str, str, str, dict[str, Any]]:
    data = {"package": PACKAGE, "elapsed_s": n / 20, "fetched": n, "line": f"fetch {n}"}
    return ("install", "progress", f"Installing {PACKAGE}", data)


def denied(host: str, port: int) -> tuple[str, str, str, dict[str, Any]]:
    return (
        "egress_denied",
        "denied",
        f"connection to {host}:{port} refused",
        {"host": host, "port": port},
    )


def test_at_the_default_there_is_no_banner_and_overview_lists_what_is_enforced(
    console: Console, served_summary: Enforcement
) -> None:
    summary = served_summary
    page = sign_up(console, console.url, "Ida Default", "ida@enforced.test")
    lines = page.locator("#enforcement-lines li")
    expect(lines).to_have_count(len(summary.lines))
    for line in summary.lines:
        expect(page.locator(f'#enforcement-lines li[data-key="{line.key}"]')).to_contain_text(
            f"{line.label}: {line.tier}"
        )
    # This machine (root, bwrap, cgroups, loop devices) is at the default: no banner.
    expect(page.locator("#enforcement")).to_have_count(0 if summary.at_default else 1)


def test_without_bwrap_overview_and_sandbox_pages_say_so_and_how_to_install_it(
    console: Console, unisolated_web: str
) -> None:
    page = sign_up(console, unisolated_web, "Uma Unisolated", "uma@enforced.test")
    command = install_command("bubblewrap")
    assert command  # this machine's os-release names a known distribution
    banner = page.locator("#enforcement")
    expect(banner.get_by_role("heading")).to_have_text(
        "Sandboxes here are less isolated than in production"
    )
    isolation = banner.locator('li[data-key="isolation"]')
    expect(isolation).to_contain_text("isolation: unisolated")
    expect(isolation).to_contain_text("sandboxes run without isolation: bwrap is not installed")
    expect(isolation.locator("code")).to_have_text(command)
    expect(banner.locator('li[data-key="network"]')).to_contain_text("network: host")
    expect(banner.locator('li[data-key="limits"]')).to_contain_text("limits: rlimits")
    shot(page, "20-overview-unisolated-banner")
    page.set_viewport_size(PHONE)  # the banner's long names and commands wrap
    assert page.evaluate(NO_SIDEWAYS_SCROLL), page.evaluate(WIDER_THAN_SCREEN)
    page.set_viewport_size(DESKTOP)

    session = sandbox_create(
        start_command=npm_server("server-memory"),
        env=None,
        ttl_seconds=60,
        actor=actor_of(workspace_of("uma@enforced.test")),
    )
    page.goto(f"{unisolated_web}/console/sandboxes/{session.pk}")
    expect(page.locator('#enforcement li[data-key="isolation"] code')).to_have_text(command)
    shot(page, "21-sandbox-unisolated-banner")
    page.set_viewport_size(PHONE)
    assert page.evaluate(NO_SIDEWAYS_SCROLL), page.evaluate(WIDER_THAN_SCREEN)
    page.set_viewport_size(DESKTOP)
    page.get_by_role("button", name="Stop sandbox").click()
    expect(page.locator("#status")).to_have_text(re.compile("cancelled|error"))


def test_a_sandbox_page_shows_install_progress_and_refused_connections(
    console: Console, served_summary: Enforcement
) -> None:
    page = sign_up(console, console.url, "Ivo Install", "ivo@enforced.test")
    page.get_by_role("link", name="Catalog").click()
    page.get_by_role("button", name="Launch Everything MCP Server in a sandbox").click()
    expect(page).to_have_url(re.compile(r"/console/sandboxes/sbx_\w+$"))
    session = SandboxSession.objects.get(pk=page.url.rsplit("/", 1)[1])
    expect(page.locator("#status")).to_have_text("ready", timeout=READY_TIMEOUT_MS)
    expect(page.locator("#enforcement")).to_have_count(0 if served_summary.at_default else 1)

    # The install reports as the lead's install step will: start, many progress, ok.
    emit(session.job_id, [("install", "start", f"Installing {PACKAGE}", {"package": PACKAGE})])
    row = page.locator('#events li[data-collapse^="install:"]')
    for first in range(1, PROGRESS_EVENTS + 1, BATCH):
        emit(session.job_id, [progress(n) for n in range(first, first + BATCH)])
        if first == 1:
            expect(row).to_contain_text("10 fetched")
        time.sleep(0.05)
    expect(row).to_contain_text(f"{PROGRESS_EVENTS} fetched · 7.5 s · fetch {PROGRESS_EVENTS}")
    expect(row).to_have_count(1)
    emit(session.job_id, [("install", "ok", f"Installed {PACKAGE}", {"package": PACKAGE})])
    installs = page.locator("#events li", has=page.locator(".step", has_text="install"))
    expect(installs).to_have_count(3)  # start, the one progress row, ok
    expect(installs.nth(2)).to_contain_text("Installed")

    for host, port in [("example.com", 443), ("evil.test", 80), ("example.com", 443)]:
        emit(session.job_id, [denied(host, port)])
    emit(session.job_id, [denied("example.com", 443)])
    example = page.locator('#events li[data-collapse="egress:example.com:443"]')
    expect(example.locator(".count")).to_have_text(f"{TIMES}3")
    expect(example.locator(".detail")).to_have_text("example.com:443")
    expect(page.locator('#events li[data-collapse="egress:evil.test:80"] .count')).to_have_text(
        f"{TIMES}1"
    )
    expect(page.locator("#status")).to_have_text("ready")  # events of a live session
    shot(page, "22-sandbox-install-and-egress")

    page.reload()  # the server renders the same rows
    expect(row).to_have_count(1)
    expect(row).to_contain_text(f"{PROGRESS_EVENTS} fetched")
    expect(row).not_to_have_attribute("data-live", "")
    expect(example.locator(".count")).to_have_text(f"{TIMES}3")
    expect(page.locator("#events li.st-denied")).to_have_count(2)
    page.set_viewport_size(PHONE)  # a long package and its progress line wrap
    assert page.evaluate(NO_SIDEWAYS_SCROLL), page.evaluate(WIDER_THAN_SCREEN)
    page.set_viewport_size(DESKTOP)
    assert session.job.events.filter(step="install", status="progress").count() == PROGRESS_EVENTS

    page.get_by_role("button", name="Stop sandbox").click()
    expect(page.locator("#status")).to_have_text("cancelled")
