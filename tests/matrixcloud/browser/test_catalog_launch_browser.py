"""A newcomer's first run: every catalog MCP server that needs no key, launched from
the Catalog page of a console on a fresh data dir, reaches ``ready`` with its tools.

Sandboxes have no network, so the first launch of each ``npx``/``uvx`` server installs
its package from the real registry (registry.npmjs.org, pypi.org) as the session's
``install`` step (sandbox/host/install.py); the server then starts offline from
``<data>/sandbox-cache``. A second launch of one starts from the cache with no install
step. It talks to the internet on purpose, because that is what it tests: where the
registries do not answer, it skips and says which one.

The console here is its own (not conftest's ``console``): the shipped catalog, with no
fixture start commands, and a data dir of its own, so the sandbox cache starts empty in
each pass of the suite (SQLite, then PostgreSQL). npm's and uv's download caches are
the machine's and may be warm; that changes the time, not what is tested.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.db import connections
from playwright.sync_api import Page, expect

from jobs.models import JobEvent
from sandbox.models import SandboxSession
from tests.factories import PASSWORD
from tests.jobs.test_jobs_worker import worker_env
from tests.jobs.test_sse import start_daphne
from tests.matrixcloud.browser.conftest import CHROMIUM, HOST_BOUNDS, Console, shot, sync_playwright
from tests.sandbox_processes import REPO, end_all_sessions, running_host, steps

# Installs take one lock (one at a time), so the last of seven waits for six; on the
# shared two-core machine (load 4 to 12) the seven were ready 41 to 72 s after the first
# launch, with the machine's own npm and uv download caches.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(900),
]

SHIPPED_CATALOG = REPO / "models_registry" / "data" / "catalog.json"
REGISTRIES = {
    "registry.npmjs.org": "https://registry.npmjs.org/@modelcontextprotocol%2fserver-everything",
    "pypi.org": "https://pypi.org/simple/mcp-server-time/",
}
REGISTRY_TIMEOUT = 5.0
# The servers the issue names; the catalog may grow, never lose one of these.
NAMED = {
    "mcp_server:filesystem", "mcp_server:everything", "mcp_server:git", "mcp_server:memory",
    "mcp_server:sequential-thinking", "mcp_server:time", "mcp_server:fetch",
}  # fmt: skip
FIRST_RUN_BOUND = 600.0  # seconds from the first launch until every session is ready
CACHED_BOUND = 60.0
STOP_TIMEOUT_MS = 30_000
TOOL_NAMES = "#tool-list article.tool h3"
CACHED_SERVER = "mcp_server:everything"
# A catalog command that cannot work for a reason in the product: the case stays in
# and is expected to fail, strictly, until the product is fixed (then it passes).
PRODUCT_FAILURES: dict[str, str] = {}


def keyless_servers() -> list[dict[str, object]]:
    """The catalog's MCP servers that run in a sandbox and need no secret."""
    items = json.loads(SHIPPED_CATALOG.read_text())["items"]
    return [
        item
        for item in items
        if item.get("kind") == "MCP Server" and item.get("sandbox") and not item.get("secrets")
    ]


KEYLESS = keyless_servers()


def unreachable_registries() -> list[str]:
    """The registries that do not answer one GET within :data:`REGISTRY_TIMEOUT`."""
    down = []
    for name, url in REGISTRIES.items():
        try:
            with urllib.request.urlopen(url, timeout=REGISTRY_TIMEOUT) as answer:  # noqa: S310
                answer.read(1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            down.append(f"{name} ({url}: {getattr(exc, 'reason', None) or exc})")
    return down


@pytest.fixture(scope="module")
def registries() -> None:
    """Skip the module, naming the registry, where the packages cannot come from."""
    down = unreachable_registries()
    if down:
        pytest.skip(
            "the first launch installs the catalog's packages from the real registries, "
            f"and {', '.join(down)} did not answer within {REGISTRY_TIMEOUT:.0f} s"
        )


def writable_tree(root: Path) -> None:
    """The cache is installed read-only; make it removable by the temp dir clean-up."""
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The console's own data dir: nothing in its sandbox cache."""
    data = tmp_path_factory.mktemp("catalog-data").resolve()
    yield data
    if (data / "sandbox-cache").exists():
        writable_tree(data / "sandbox-cache")


@pytest.fixture(scope="module")
def console(
    registries: None,
    django_db_setup: None,
    tmp_path_factory: pytest.TempPathFactory,
    data_dir: Path,
    django_db_blocker: Any,
) -> Iterator[Console]:
    """daphne and a sandbox host on the test database and bus, sharing ``data_dir``,
    serving the shipped catalog; Chromium to drive them. Nothing here is a batch job
    or a model, so there is no worker and no hub."""
    if sync_playwright is None or not CHROMIUM.exists():
        pytest.skip("needs Playwright and Chromium (see tests/matrixcloud/browser/conftest.py)")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    tmp = tmp_path_factory.mktemp("catalog-console")
    fresh = {
        "MATRIX_RUNTIME_DATA_DIR": str(data_dir),
        "MATRIX_RUNTIME_CATALOG_FILE": str(SHIPPED_CATALOG),
    }
    database = {
        k: v for k, v in worker_env().items() if k in ("MATRIX_RUNTIME_DB_PATH", "DATABASE_URL")
    }
    server = start_daphne({**database, **fresh, "MATRIX_RUNTIME_RATE_LIMIT_RPM": "0"})
    try:
        server.wait_ready()
        with (
            running_host(tmp / "host.log", **HOST_BOUNDS, **fresh) as host,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                yield Console(server, host, None, None, browser)  # type: ignore[arg-type]
            finally:
                browser.close()
                with django_db_blocker.unblock():
                    end_all_sessions()  # whatever a failure left running
                    # a connection opened here outlives the test's: the test database
                    # could not be dropped at the end (PostgreSQL)
                    connections.close_all()
    finally:
        server.stop()
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def sign_up(console: Console, email: str) -> Page:
    page = console.page()
    page.goto(f"{console.url}/signup")
    page.get_by_label("Your name").fill("Nell Newcomer")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(f"{console.url}/console/")
    return page


def launch(page: Page, console: Console, item: dict[str, object]) -> str:
    """Press the item's "Launch in a sandbox" on the Catalog page; the session id."""
    page.goto(f"{console.url}/console/catalog")
    button = page.get_by_role("button", name=f"Launch {item['name']} in a sandbox")
    card = page.locator("li.card", has=button)
    expect(card.locator("code.cmd")).to_have_text(str(item["start_command"]))
    button.click()
    expect(page).to_have_url(re.compile(r"/console/sandboxes/sbx_\w+$"))
    return page.url.rsplit("/", 1)[1]


def stop(page: Page, console: Console, session_id: str) -> None:
    """Stop a session that is still on from its page (an ended one has no button)."""
    page.goto(f"{console.url}/console/sandboxes/{session_id}")
    button = page.get_by_role("button", name="Stop sandbox")
    if button.count():
        button.click()
        expect(page.locator("#status")).to_have_text("cancelled", timeout=STOP_TIMEOUT_MS)


def settled(session_id: str) -> bool:
    session = SandboxSession.objects.select_related("job").get(pk=session_id)
    return session.ready_at is not None or session.job.is_terminal


@dataclass
class Outcome:
    """What one first launch came to, as its page and rows showed it."""

    session_id: str
    job_id: str
    ready: bool
    error: str
    steps: list[tuple[str, str]]
    installed: dict[str, Any] | None  # the data of its ``install``/``ok`` event
    started_from: list[str] | None  # the argv its server started with, from the cache
    db_tools: list[str]
    page_status: str
    page_tools: list[str]
    page_events: str


def outcome(page: Page, console: Console, session_id: str, name: str) -> Outcome:
    session = SandboxSession.objects.select_related("job").get(pk=session_id)
    job_id = session.job_id
    installed = JobEvent.objects.filter(job_id=job_id, step="install", status="ok").first()
    started = JobEvent.objects.filter(job_id=job_id, step="mcp_start", status="start").first()
    page.goto(f"{console.url}/console/sandboxes/{session_id}")
    shot(page, f"20-catalog-{name}")
    return Outcome(
        session_id=session_id,
        job_id=job_id,
        ready=session.ready_at is not None,
        error=session.job.error,
        steps=steps(job_id),
        installed=installed.data if installed else None,
        started_from=(started.data or {}).get("from_cache") if started else None,
        db_tools=[tool["name"] for tool in session.tools],
        page_status=page.locator("#status").inner_text().strip(),
        page_tools=[
            text.strip() for text in page.locator("#tool-list article.tool h3").all_inner_texts()
        ],
        page_events=page.locator("#events").inner_text(),
    )


def short(item_id: object) -> str:
    return str(item_id).split(":", 1)[1]


@pytest.fixture(scope="module")
def first_run(console: Console, data_dir: Path, django_db_blocker: Any) -> dict[str, Outcome]:
    """One user presses "Launch in a sandbox" for every keyless server, one after
    another without waiting (the host runs the sessions at once; their installs take
    turns), waits until each is ready or has ended, reads each one's page, then stops
    each from its page. Read here, not in the tests: each test's teardown empties the
    tables (transactional tests). A module fixture comes before the test's database
    access, so it asks for its own."""
    with django_db_blocker.unblock():
        return first_launches(console, data_dir)


def first_launches(console: Console, data_dir: Path) -> dict[str, Outcome]:
    cache = data_dir / "sandbox-cache"
    assert not cache.exists() or not any(cache.rglob("*")), list(cache.rglob("*"))[:10]
    page = sign_up(console, "nell@catalog.test")
    started = time.monotonic()
    sessions = {str(item["id"]): launch(page, console, item) for item in KEYLESS}
    deadline = started + FIRST_RUN_BOUND
    while not all(settled(sid) for sid in sessions.values()) and time.monotonic() < deadline:
        time.sleep(1)
    print(f"\nfirst run of {len(sessions)} servers settled in {time.monotonic() - started:.0f} s")
    outcomes = {key: outcome(page, console, sid, short(key)) for key, sid in sessions.items()}
    for key, seen in outcomes.items():
        took = (seen.installed or {}).get("elapsed_s")
        print(f"  {key}: ready={seen.ready} install {took} s, {len(seen.page_tools)} tools")
    for session_id in sessions.values():
        stop(page, console, session_id)
    page.context.close()
    return outcomes


def case(item: dict[str, object]) -> object:
    marks = []
    if item["id"] in PRODUCT_FAILURES:
        marks.append(pytest.mark.xfail(strict=True, reason=PRODUCT_FAILURES[str(item["id"])]))
    return pytest.param(item, id=short(item["id"]), marks=marks)


def test_the_catalog_has_the_keyless_servers_the_issue_names() -> None:
    ids = {item["id"] for item in KEYLESS}
    assert ids >= NAMED, sorted(ids)
    for item in KEYLESS:
        assert str(item["start_command"]).split()[0] in ("npx", "uvx"), item


@pytest.mark.parametrize("item", [case(item) for item in KEYLESS])
def test_a_keyless_catalog_server_installs_from_the_registry_and_is_ready(
    first_run: dict[str, Outcome], data_dir: Path, item: dict[str, object]
) -> None:
    seen = first_run[str(item["id"])]
    assert seen.ready, f"{item['id']} did not become ready: {seen.error!r} {seen.steps}"
    assert seen.page_status == "ready"
    assert seen.page_tools, "the sandbox page lists no tools"
    assert sorted(seen.page_tools) == sorted(seen.db_tools)

    installs = [status for step, status in seen.steps if step == "install"]
    assert installs[:1] == ["start"], seen.steps
    assert installs[-1:] == ["ok"], seen.steps
    assert set(installs[1:-1]) <= {"progress"}, seen.steps
    assert seen.steps.index(("install", "ok")) < seen.steps.index(("mcp_start", "start"))
    assert seen.installed is not None
    real = "registry.npmjs.org" if str(item["start_command"]).startswith("npx") else "pypi.org"
    assert urlsplit(seen.installed["registry"]).hostname == real, seen.installed
    assert f"Installed {seen.installed['package']}" in seen.page_events

    # started offline, from the package just installed into this data dir's cache
    assert seen.started_from is not None
    assert seen.started_from == seen.installed["from_cache"]
    assert seen.started_from[1].startswith(f"{data_dir / 'sandbox-cache'}/"), seen.started_from


def test_a_second_launch_starts_from_the_cache_with_no_install(
    console: Console, first_run: dict[str, Outcome]
) -> None:
    first = first_run[CACHED_SERVER]
    assert first.ready, f"the first launch did not become ready: {first.error!r}"
    item = next(item for item in KEYLESS if item["id"] == CACHED_SERVER)
    page = sign_up(console, "otto@catalog.test")
    session_id = launch(page, console, item)
    expect(page.locator("#status")).to_have_text("ready", timeout=CACHED_BOUND * 1000)
    again = outcome(page, console, session_id, f"{short(CACHED_SERVER)}-cached")
    stop(page, console, session_id)

    assert again.ready, (again.error, again.steps)
    assert [step for step, _ in again.steps if step == "install"] == [], again.steps
    assert again.installed is None
    assert again.started_from == first.started_from
    assert again.page_tools
    assert sorted(again.page_tools) == sorted(first.page_tools)
    assert "Installed" not in again.page_events
