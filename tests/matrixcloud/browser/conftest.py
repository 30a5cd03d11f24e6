"""A real console to drive: daphne, a sandbox host and a worker on the test database and
bus, and Debian's Chromium under Playwright.

The catalog the server reads is a copy of the shipped one whose MCP servers start from
the npm fixtures by absolute path (sandboxes are offline, so ``npx`` could not fetch
them); that is what ``MATRIX_RUNTIME_CATALOG_FILE`` is for. Screenshots go to
``artifacts/screenshots/`` (or ``MATRIX_CONSOLE_SCREENSHOTS``).

Every page a test opens reports its Content-Security-Policy violations (the DOM's
``securitypolicyviolation`` events and Chromium's console lines about the policy) into
``Console.violations``; each test must end with none, so every scripted feature the
walk exercises is known to work under the policy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings

from tests.fake_hub import FakeHub, FakeRepo, safetensors_bytes, tiny_model_files
from tests.jobs.test_jobs_worker import Worker, worker_env
from tests.jobs.test_sse import Server, start_daphne
from tests.sandbox_processes import NPM, REPO, Host, npm_server, running_host

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("MATRIX_CONSOLE_SCREENSHOTS", REPO / "artifacts" / "screenshots"))
STEP_TIMEOUT_MS = 20_000
# The shared test host's bounds are short for its timeout tests; a browser walk on a
# busy machine gets the defaults' room instead (node's start-up under load is slow).
HOST_BOUNDS = {
    "MATRIX_RUNTIME_SANDBOX_START_TIMEOUT": "45",
    "MATRIX_RUNTIME_SANDBOX_CALL_TIMEOUT": "20",
    "MATRIX_RUNTIME_SANDBOX_CALL_HARD_CAP": "30",
}
HUB_MODEL = "acme/tiny-llama-1B"
# The fake hub sends each file whole after a delay of its size over this rate: four
# 64 kB shards and the tiny model's weights take about 1.5 s, file by file, so the
# progress bar is seen between 0 and 100.
HUB_RATE = 250_000
HUB_SHARDS = 4
# Runs before any page script, so a violation during load is seen too.
REPORT_CSP_VIOLATIONS = """document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolation(event.violatedDirective + " blocked " + (event.blockedURI || "inline")
    + " on " + event.documentURI);
});"""

try:
    from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
except ImportError:  # pragma: no cover - the dev group installs it
    sync_playwright = None  # type: ignore[assignment]


def _skip_reason() -> str:
    if sync_playwright is None:
        return "the playwright package is not installed (uv sync --group dev)"
    if not CHROMIUM.exists():
        return "no Chromium at /usr/bin/chromium (apt-get install -y chromium; .ci/run does)"
    if shutil.which("node") is None or not NPM.is_dir():
        return "needs node and the npm fixtures: npm ci --prefix tests/fixtures/npm"
    return ""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    if reason:
        for item in items:
            if "tests/matrixcloud/browser" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class Console:
    """The running console: its base URL, the processes behind it, the browser."""

    server: Server
    host: Host
    worker: Worker
    hub: FakeHub
    browser: Browser
    violations: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def page(self) -> Page:
        """A fresh browser profile (its own cookies) with bounded waits."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        context.expose_function("__cspViolation", self._violation)
        context.add_init_script(REPORT_CSP_VIOLATIONS)
        page = context.new_page()
        page.on("console", self._console_line)
        page.set_default_timeout(STEP_TIMEOUT_MS)
        return page

    def _violation(self, report: str) -> None:
        self.violations.append(report)

    def _console_line(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.violations.append(f"console: {message.text}")


def shot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_catalog(path: Path) -> Path:
    """The shipped catalog with each MCP server started from the npm fixtures."""
    shipped = json.loads(Path(settings.MATRIX_CATALOG_FILE).read_text())
    fixtures = {
        "mcp_server:everything": npm_server("server-everything", "stdio"),
        "mcp_server:memory": npm_server("server-memory"),
    }
    for item in shipped["items"]:
        if item["id"] in fixtures:
            item["start_command"] = fixtures[item["id"]]
    path.write_text(json.dumps(shipped))
    return path


test_catalog.__test__ = False  # type: ignore[attr-defined]


def start_worker(log: Path, env: dict[str, str]) -> Worker:
    """``manage.py worker`` on the test database, with ``env`` on top."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "worker"],
            cwd=REPO,
            env={**worker_env(), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(proc, log)


@pytest.fixture(autouse=True)
def no_csp_violations(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each browser test ends with no Content-Security-Policy violation on any page."""
    if "console" not in request.fixturenames:
        yield
        return
    console: Console = request.getfixturevalue("console")
    console.violations.clear()
    yield
    assert console.violations == [], console.violations


@pytest.fixture(scope="module")
def console(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    # Playwright's sync API keeps an event loop on this thread; the test's own ORM
    # reads are plain synchronous calls between browser steps.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    tmp = tmp_path_factory.mktemp("console")
    database = {
        k: v for k, v in worker_env().items() if k in ("MATRIX_RUNTIME_DB_PATH", "DATABASE_URL")
    }
    hub = FakeHub()
    files = tiny_model_files()
    for shard in range(HUB_SHARDS):
        files[f"extra-{shard}.safetensors"] = safetensors_bytes({f"w{shard}": ("F16", [128, 256])})
    hub.add(FakeRepo(HUB_MODEL, downloads=10), files)
    hub.rate = HUB_RATE
    hub.start()
    hub_env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": ""}
    server = start_daphne(
        {
            **database,
            **hub_env,
            "MATRIX_RUNTIME_RATE_LIMIT_RPM": "0",
            "MATRIX_RUNTIME_MATRIXSHELL_ENABLED": "true",
            # The API accepts the test job types (test.sleep) the worker runs.
            "MATRIX_RUNTIME_EXTRA_JOB_MODULES": "tests.job_handlers",
            "MATRIX_RUNTIME_CATALOG_FILE": str(test_catalog(tmp / "catalog.json")),
        }
    )
    worker = start_worker(tmp / "worker.log", hub_env)
    try:
        server.wait_ready()
        worker.ready()
        with (
            running_host(tmp / "host.log", **HOST_BOUNDS) as host,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                yield Console(server, host, worker, hub, browser)
            finally:
                browser.close()
    finally:
        worker.stop()
        server.stop()
        hub.stop()
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        print(f"\nconsole screenshots: {SCREENSHOTS}")
