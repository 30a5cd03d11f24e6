"""A new user's walk through the console in a real browser against a real server.

Sign up → launch ``server-everything`` from the catalog → watch ``ready`` arrive over
the event stream (no reload) → call ``echo`` from the form built from its JSON schema
and read the text → stop. Another user signed in next to them sees none of it: not the
pages, not the list, not the event stream. Then: a runtime joins with a minted token
and appears on the open page; a model is imported from the fake hub, attached, and its
progress bar climbs to ready; a job page follows its job live and cancels it; the
MatrixShell terminal answers in place; and with JavaScript off the pages still work.
The Runtimes page removes a runtime and rotates or revokes its token, showing a secret
once (a reload shows none and mints none), and the lists follow the workspace's
activity stream: a job created over the API appears with no request repeating on a
timer.
Screenshots of the main pages are saved (``conftest.SCREENSHOTS``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from accounts.models import User
from jobs.choices import JobStatus
from jobs.models import Job
from jobs.services import job_enqueue
from matrixcloud.lib.http import fetch
from sandbox.models import SandboxSession, ToolCall
from tests import job_handlers  # noqa: F401  (registers test.sleep in this process too)
from tests.factories import PASSWORD, actor_of
from tests.jobs.test_jobs_worker import wait_for
from tests.matrixcloud.browser.conftest import HUB_MODEL, Console, shot
from tests.sandbox_processes import REPO

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

READY_TIMEOUT_MS = 50_000
PAGE_BUDGET = 100 * 1024  # bytes of HTML, before images
PHONE = {"width": 390, "height": 844}
PHONE_PAGES = [
    "/console/", "/console/catalog", "/console/sandboxes", "/console/jobs", "/console/models",
    "/console/runtimes", "/console/providers", "/console/members", "/console/audit",
]  # fmt: skip
DESKTOP = {"width": 1280, "height": 900}
NO_SIDEWAYS_SCROLL = "document.documentElement.scrollWidth <= window.innerWidth"
# The elements that stick out to the right, for the failure message.
WIDER_THAN_SCREEN = """Array.from(document.querySelectorAll("body *"))
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
  .map(e => e.tagName + "." + e.className + " " + Math.round(e.getBoundingClientRect().right))
  .slice(0, 12)"""
# The joining installation is another one: its own data dir and database.
JOINER_DROPPED = ("DATABASE_URL", "MATRIX_RUNTIME_DB_PATH", "MATRIX_RUNTIME_DATA_DIR")


def sign_up(console: Console, name: str, email: str) -> Page:
    page = console.page()
    page.goto(f"{console.url}/signup")
    page.get_by_label("Your name").fill(name)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(f"{console.url}/console/")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    return page


def test_a_new_user_launches_calls_and_stops_a_sandbox(console: Console) -> None:
    page = sign_up(console, "Ada Lovelace", "ada@console.test")
    shot(page, "01-overview")

    page.get_by_role("link", name="Catalog").click()
    expect(page.get_by_role("heading", name="Catalog")).to_be_visible()
    shot(page, "02-catalog")
    page.get_by_role("button", name="Launch Everything MCP Server in a sandbox").click()
    expect(page).to_have_url(re.compile(r"/console/sandboxes/sbx_\w+$"))
    session_id = page.url.rsplit("/", 1)[1]

    # `ready` arrives on the open page over SSE: the status flips and the event is
    # appended by the script (server-rendered events carry no data-live mark).
    status = page.locator("#status")
    expect(status).to_have_text("ready", timeout=READY_TIMEOUT_MS)
    ready = page.locator("#events li[data-live]", has=page.locator(".step", has_text="ready"))
    expect(ready).to_have_count(1)
    expect(ready).to_contain_text("Sandbox ready")

    # The echo form is built from the tool's input schema: a required `message` field.
    echo = page.get_by_role("form", name="Call echo")
    message = echo.get_by_label("message (required)")
    expect(message).to_have_attribute("required", "")
    message.fill("hello from the console")
    echo.get_by_role("button", name="Call echo").click()
    result = page.locator('article[data-tool="echo"] .tool-result')
    expect(result).to_contain_text("Echo: hello from the console")
    shot(page, "03-sandbox-session")
    for url in (page.url, f"{console.url}/console/catalog"):  # the heaviest pages
        assert len(page.request.get(url).body()) < PAGE_BUDGET, url
    page.set_viewport_size(PHONE)  # one column, nothing wider than the screen
    assert page.evaluate(NO_SIDEWAYS_SCROLL), page.evaluate(WIDER_THAN_SCREEN)
    shot(page, "03b-sandbox-session-phone")
    page.set_viewport_size(DESKTOP)
    call = wait_for(lambda: ToolCall.objects.filter(tool="echo").first(), 10, "the call row")
    assert call.outcome == "ok"
    assert call.session_id == session_id

    page.get_by_role("button", name="Stop sandbox").click()
    expect(page.locator("#status")).to_have_text("cancelled")
    expect(page.locator("#events")).to_contain_text("Job cancelled")
    session = SandboxSession.objects.select_related("job").get(pk=session_id)
    assert session.job.status == JobStatus.CANCELLED

    page.get_by_role("link", name="Sandboxes").click()
    expect(page.get_by_role("link", name=session_id)).to_be_visible()
    shot(page, "04-sandboxes")
    page.get_by_role("link", name="Jobs").click()
    expect(page.get_by_role("link", name=session.job_id)).to_be_visible()
    shot(page, "05-jobs")
    page.get_by_role("link", name=session.job_id).click()
    expect(page.locator("#events")).to_contain_text("Sandbox ready")
    shot(page, "06-job")
    page.get_by_role("link", name="Members").click()
    expect(page.get_by_role("cell", name="ada@console.test")).to_be_visible()
    shot(page, "07-members")
    page.get_by_role("link", name="Audit").click()
    expect(page.get_by_role("cell", name="sandbox.created")).to_be_visible()
    shot(page, "08-audit")

    page.set_viewport_size(PHONE)
    for path in [*PHONE_PAGES, f"/console/jobs/{session.job_id}"]:
        page.goto(f"{console.url}{path}")
        assert page.evaluate(NO_SIDEWAYS_SCROLL), (path, page.evaluate(WIDER_THAN_SCREEN))
    shot(page, "08b-audit-phone")
    page.set_viewport_size(DESKTOP)

    # Another person, signed in at the same time, sees none of it.
    other = sign_up(console, "Grace Hopper", "grace@console.test")
    for path in (f"/console/sandboxes/{session_id}", f"/console/jobs/{session.job_id}"):
        assert other.goto(f"{console.url}{path}").status == 404  # type: ignore[union-attr]
    other.goto(f"{console.url}/console/sandboxes")
    expect(other.get_by_text(session_id)).to_have_count(0)
    other.goto(f"{console.url}/console/jobs")
    expect(other.get_by_text(session.job_id)).to_have_count(0)
    stream = other.request.get(f"{console.url}/v1/sandbox/sessions/{session_id}/events")
    assert stream.status == 404
    assert stream.json() == {"error": "sandbox session not found", "status": 404}
    mine = page.request.get(f"{console.url}/v1/sandbox/sessions/{session_id}")
    assert mine.status == 200  # the same cookie signs the owner in on the API


def test_sign_in_page_and_a_wrong_password(console: Console) -> None:
    page = console.page()
    page.goto(f"{console.url}/console/jobs")
    expect(page).to_have_url(f"{console.url}/login?next=/console/jobs")
    shot(page, "00-sign-in")
    page.keyboard.press("Tab")  # the first stop skips the navigation
    expect(page.locator(":focus")).to_have_text("Skip to content")
    page.keyboard.press("Enter")
    expect(page.locator(":focus")).to_have_id("main")
    page.get_by_label("Email").fill("nobody@console.test")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("invalid email or password")


def test_a_runtime_appears_when_it_joins_with_a_minted_token(
    console: Console, tmp_path: Path
) -> None:
    page = sign_up(console, "Linus Ops", "linus@console.test")
    page.get_by_role("link", name="Runtimes").click()
    expect(page.get_by_text("No runtime has joined yet")).to_be_visible()
    page.get_by_label("Label").fill("edge")
    page.get_by_role("button", name="Mint join token").click()
    secret = page.locator("#join-secret").inner_text().strip()
    assert secret.startswith("mxrt_")
    shot(page, "09-runtimes-minted")

    # Another installation joins with it, as an operator would: `manage.py join`.
    env = {k: v for k, v in os.environ.items() if k not in JOINER_DROPPED}
    env["MATRIX_RUNTIME_DATA_DIR"] = str(tmp_path / "joiner")
    joined = subprocess.run(
        [sys.executable, "manage.py", "join", "--control-plane", console.url,
         "--token", secret, "--name", "edge-box", "--no-heartbeat"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr
    # The open page shows it without a reload (the minted secret is still on screen).
    row = page.locator("#runtime-list tr", has_text="edge-box")
    expect(row).to_be_visible(timeout=15_000)
    expect(row).to_contain_text("online")
    expect(page.locator("#minted")).to_be_visible()
    expect(page.locator("#join-token-list")).to_contain_text("No active join token")  # used up
    shot(page, "10-runtimes-joined")
    page.goto(f"{console.url}/console/runtimes")
    expect(page.locator("#join-secret")).to_have_count(0)  # the secret is shown once
    expect(page.locator("#runtime-list")).to_contain_text("edge-box")

    other = sign_up(console, "Eve Else", "eve@console.test")
    other.goto(f"{console.url}/console/runtimes")
    expect(other.get_by_text("edge-box")).to_have_count(0)
    expect(other.get_by_text("No runtime has joined yet")).to_be_visible()


# Every value the installation bars take, recorded from the first byte of the page.
RECORD_PROGRESS = """
window.__progress = [];
new MutationObserver(function (records) {
  records.forEach(function (r) {
    window.__progress.push(Number(r.target.getAttribute(r.attributeName)));
  });
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["aria-valuenow"] });
"""


def test_a_model_is_imported_attached_and_its_progress_bar_reaches_ready(
    console: Console,
) -> None:
    page = sign_up(console, "Mo Models", "mo@console.test")
    page.get_by_role("link", name="Models").click()
    page.get_by_label("Search Hugging Face").fill("tiny")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name=f"Import {HUB_MODEL}").click()
    expect(page.get_by_role("status")).to_contain_text(f"Imported {HUB_MODEL}")
    profile = page.locator("article.profile", has_text=HUB_MODEL)
    expect(profile).to_contain_text("profile_only")

    page.context.add_init_script(RECORD_PROGRESS)
    profile.get_by_text("Attach to a runtime").click()
    form = profile.get_by_role("form", name=f"Attach {HUB_MODEL}")
    expect(form.get_by_label("Install mode")).to_have_value("pull_from_source")
    form.get_by_label("Serving engine").fill("vLLM")
    form.get_by_role("button", name=f"Attach {HUB_MODEL}").click()

    installation = page.locator("li.installation", has_text=HUB_MODEL)
    expect(installation).to_be_visible()
    expect(installation.locator("[data-inst-status]")).to_have_text("ready", timeout=60_000)
    expect(installation.locator("progress")).to_have_js_property("value", 100)
    expect(installation.locator("output")).to_have_text("100%")
    expect(profile.locator(".badge")).to_have_text("ready")
    seen = page.evaluate("window.__progress")
    assert any(0 < value < 100 for value in seen), f"no bar value between 0 and 100: {seen}"
    assert seen == sorted(seen), f"the bar went backwards: {seen}"
    shot(page, "11-models")
    assert console.hub.gets_of("model.safetensors"), "the weights came from the fake hub"

    other = sign_up(console, "Nia Next", "nia@console.test")
    other.goto(f"{console.url}/console/models")
    expect(other.get_by_text(HUB_MODEL)).to_have_count(0)
    answer = other.request.get(f"{console.url}/v1/model-installations")
    assert answer.status == 200
    assert answer.json() == {"installations": []}


def test_the_matrixshell_terminal_answers_in_place(console: Console) -> None:
    page = sign_up(console, "Tess Term", "tess@console.test")
    page.get_by_role("link", name="Shell").click()
    expect(page.get_by_role("button", name="Install MatrixShell")).to_be_visible()
    command = page.get_by_label("Command")
    command.fill("rm -rf /")
    command.press("Enter")
    terminal = page.get_by_role("log", name="Terminal output")
    expect(terminal).to_contain_text("$ rm -rf /")
    expect(terminal).to_contain_text("refused by safety denylist")
    command.fill("echo hi")
    command.press("Enter")
    expect(terminal).to_contain_text("MatrixShell sandbox is not installed yet")
    command.press("ArrowUp")
    expect(command).to_have_value("echo hi")
    assert page.url.endswith("/console/shell")  # no navigation: the script answered
    shot(page, "12-shell")


def test_without_javascript_the_pages_still_work(console: Console) -> None:
    """Progressive enhancement: with scripts off, sign up, launch, reload until ready,
    call echo through the plain form (JSON arguments) and stop."""
    context = console.browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(f"{console.url}/signup")
    page.get_by_label("Your name").fill("Plain Page")
    page.get_by_label("Email").fill("plain@console.test")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(f"{console.url}/console/")  # signed in: the cookie is set
    page.goto(f"{console.url}/console/catalog")
    page.get_by_role("button", name="Launch Everything MCP Server in a sandbox").click()
    expect(page).to_have_url(re.compile(r"/console/sandboxes/sbx_\w+$"))
    session_id = page.url.rsplit("/", 1)[1]
    wait_for(
        lambda: SandboxSession.objects.filter(pk=session_id, ready_at__isnull=False).exists(),
        READY_TIMEOUT_MS / 1000,
        "the session to be ready",
    )
    page.reload()
    expect(page.locator("#status")).to_have_text("ready")
    echo = page.locator("article.tool", has=page.get_by_role("heading", name="echo", exact=True))
    echo.get_by_label("Arguments (JSON object)").fill('{"message": "no script needed"}')
    echo.get_by_role("button", name="Call echo").click()
    expect(page.locator(".result")).to_contain_text("Echo: no script needed")
    page.get_by_role("button", name="Stop sandbox").click()
    expect(page.locator("#status")).to_have_text("cancelled")
    context.close()


def test_a_job_page_follows_its_job_live_and_cancels_it(console: Console) -> None:

    page = sign_up(console, "Jo Jobs", "jo@console.test")
    user = User.objects.get(email="jo@console.test")
    job = job_enqueue(
        job_type="test.sleep",
        payload={"seconds": 60, "ticks": 60},
        ttl_seconds=120,
        actor=actor_of(user.memberships.get().workspace, user),
    )
    page.get_by_role("link", name="Jobs").click()
    page.get_by_label("Status").select_option("running")
    page.get_by_role("button", name="Filter").click()
    # The filter is a GET form: let its navigation finish before reloading, or the
    # reload can land on the page being replaced ("Not attached to an active page").
    page.wait_for_url(re.compile(r"[?&]status=running"))
    page.wait_for_load_state()
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.RUNNING, 30, "a running job")
    page.reload()
    page.get_by_role("link", name=job.pk).click()
    expect(page.locator("#status")).to_have_text("running")
    ticks = page.locator("#events li[data-live]", has_text="tick")
    expect(ticks.first).to_be_visible(timeout=10_000)
    seen = ticks.count()
    wait_for(lambda: ticks.count() > seen, 10, "more ticks on the open page")
    shot(page, "06b-job-live")
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#status")).to_have_text("cancelled")
    expect(page.locator("#events")).to_contain_text("Job cancelled")


# --- the Runtimes page's actions, secrets shown once, lists without polling ------------

IDLE_MS = 7_000  # longer than two of the 3 s polls the console used to make
PUSH_MS = 5_000  # a list moves this soon after a change: well before the stream's 15 s tick


def http(console: Console, method: str, path: str, body: Any = None, token: str = "") -> Any:
    """One API request over loopback: (status, JSON body)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = fetch(method, console.url + path, json=body, headers=headers, timeout=30)
    return reply.status, reply.json


def heartbeat(console: Console, token: str) -> int:
    status, _ = http(console, "POST", "/v1/cloud/runtimes/heartbeat", {}, token)
    return int(status)


def following(page: Page) -> None:
    """The page's lists follow the activity stream (its first versions arrived)."""
    expect(page.locator("body")).to_have_attribute("data-activity-state", "open")


def record_requests(page: Page) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda request: seen.append(f"{request.method} {request.url}"))
    return seen


def test_the_runtimes_page_revokes_rotates_and_removes_showing_secrets_once(
    console: Console,
) -> None:
    from runtimes.models import JoinToken, Runtime

    page = sign_up(console, "Rita Runtimes", "rita@console.test")
    workspace = User.objects.get(email="rita@console.test").memberships.get().workspace  # type: ignore[attr-defined]
    page.get_by_role("link", name="Runtimes").click()
    page.get_by_label("Label").fill("rita-edge")
    page.get_by_role("button", name="Mint join token").click()
    expect(page).to_have_url(f"{console.url}/console/runtimes")  # redirected to a GET
    secret = page.locator("#join-secret").inner_text().strip()
    assert secret.startswith("mxrt_")
    assert JoinToken.objects.filter(workspace=workspace).count() == 1
    page.reload()  # re-sends the GET, not the POST
    expect(page.locator("#join-token-list")).to_contain_text("rita-edge")
    expect(page.locator("#join-secret")).to_have_count(0)
    assert secret not in page.content()
    assert JoinToken.objects.filter(workspace=workspace).count() == 1  # nothing minted

    following(page)
    status, joined = http(
        console, "POST", "/v1/cloud/runtimes/register", {"join_token": secret, "name": "rita-box"}
    )
    assert status == 201, joined
    runtime_id, token = joined["runtime"]["id"], joined["runtime_token"]
    row = page.locator(f'#runtime-list tr[data-runtime="{runtime_id}"]')
    expect(row).to_contain_text("online", timeout=PUSH_MS)  # live, no reload

    page.get_by_role("button", name="Revoke the token of rita-box").click()
    expect(page.get_by_role("status")).to_contain_text(f"The token of rita-box ({runtime_id})")
    expect(row).to_contain_text("revoked")
    assert heartbeat(console, token) == 401

    page.get_by_role("button", name="Rotate the token of rita-box").click()
    expect(page).to_have_url(f"{console.url}/console/runtimes")
    rotated = page.locator("#runtime-secret").inner_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", rotated)
    expect(row).to_contain_text("active")
    shot(page, "10b-runtime-token-rotated")
    assert (heartbeat(console, rotated), heartbeat(console, token)) == (200, 401)
    page.reload()
    expect(page.locator("#runtime-secret")).to_have_count(0)
    assert rotated not in page.content()

    # Someone of another workspace cannot act on it, even with a valid form of their own.
    other = sign_up(console, "Otto Other", "otto@console.test")
    other.goto(f"{console.url}/console/runtimes")
    expect(other.locator(f'tr[data-runtime="{runtime_id}"]')).to_have_count(0)
    csrf = other.locator('meta[name="csrf-token"]').get_attribute("content") or ""
    for action in ("remove", "token/rotate", "token/revoke"):
        refused = other.request.post(
            f"{console.url}/console/runtimes/{runtime_id}/{action}",
            form={"csrfmiddlewaretoken": csrf},
            max_redirects=0,
        )
        assert refused.status == 404, (action, refused.status)
    assert heartbeat(console, rotated) == 200

    page.get_by_role("button", name="Remove rita-box").click()
    expect(page.get_by_role("status")).to_contain_text(f"Runtime rita-box ({runtime_id}) removed")
    expect(row).to_have_count(0)
    assert not Runtime.objects.filter(pk=runtime_id).exists()
    assert heartbeat(console, rotated) == 401


def test_lists_follow_the_activity_stream_and_nothing_polls(console: Console) -> None:
    page = sign_up(console, "Lee Lists", "lee@console.test")
    status, signed = http(
        console, "POST", "/v1/auth/login", {"email": "lee@console.test", "password": PASSWORD}
    )
    assert status == 200, signed
    token = signed["token"]
    seen = record_requests(page)
    page.goto(f"{console.url}/console/jobs")
    following(page)
    expect(page.locator("#job-list")).to_contain_text("No jobs match")

    seen.clear()
    page.wait_for_timeout(IDLE_MS)
    assert seen == [], f"requests while nothing changed: {seen}"

    job = {"type": "test.sleep", "payload": {"seconds": 0.3, "ticks": 1}, "ttl_seconds": 60}
    status, created = http(console, "POST", "/v1/jobs", job, token)
    assert status in (200, 201, 202), created
    started = time.monotonic()
    row = page.locator("#job-list tr", has_text=created["job_id"])
    expect(row).to_be_visible(timeout=PUSH_MS)
    appeared = time.monotonic() - started
    expect(row).to_contain_text("complete", timeout=20_000)
    page_reads = [line for line in seen if line.startswith("GET ") and "/console/jobs" in line]
    assert 1 <= len(page_reads) <= 6, page_reads  # one re-read per change, not per tick
    assert all(line.endswith("/console/jobs") for line in page_reads), seen
    assert not [line for line in seen if "/console/activity" in line]  # the one stream stays
    print(f"a job created over the API was on the open list after {appeared:.2f} s")

    seen.clear()
    page.wait_for_timeout(IDLE_MS)
    assert seen == [], f"requests after the job ended: {seen}"

    # The overview's counts move the same way, and only for this workspace's jobs.
    page.goto(f"{console.url}/console/")
    following(page)
    complete = page.locator('#counts [data-count="complete"]')
    expect(complete).to_have_text("1")
    seen.clear()
    page.wait_for_timeout(IDLE_MS)
    assert seen == [], f"the overview polled: {seen}"
    elsewhere = sign_up(console, "Uma Elsewhere", "uma@console.test")
    elsewhere.goto(f"{console.url}/console/jobs")
    following(elsewhere)
    status, created = http(console, "POST", "/v1/jobs", job, token)
    assert status in (200, 201, 202), created
    expect(complete).to_have_text("2", timeout=20_000)
    counts_reads = [line for line in seen if "/console/overview/counts" in line]
    assert 1 <= len(counts_reads) <= 6, counts_reads
    expect(elsewhere.locator("#job-list")).to_contain_text("No jobs match")
    expect(elsewhere.locator("#job-list")).not_to_contain_text(created["job_id"])
