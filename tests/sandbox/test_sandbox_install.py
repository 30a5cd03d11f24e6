"""First launch from an empty cache: the session's install step, under a real host.

Sandboxes have no network. An ``npx``/``uvx``/``pipx run`` of an allow-listed package
the cache lacks is installed by the host first (``install`` events), then the server
starts offline from the cache; the next launch starts from the cache at once. The
registry is a real server on loopback (tests/fake_registry.py) that real ``npm`` and
``uv`` install from; the host reaches it through ``npm_config_registry`` and
``UV_INDEX_URL``, as an operator's mirror would be configured.
"""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.models import JobEvent
from sandbox.bubblewrap import prefetch_cache_dir
from sandbox.isolation import TIER_BUBBLEWRAP, isolation_tier
from tests.fake_registry import FakeRegistry, Serving, serving
from tests.jobs.test_jobs_worker import wait_for
from tests.sandbox_processes import (
    Host,
    end_all_sessions,
    events,
    no_session_processes,
    running_host,
    steps,
    terminal,
    wait_step,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SESSIONS = "/v1/sandbox/sessions"
NPM_PACKAGE, PYPI_PACKAGE = "tiny-mcp-js", "tiny-mcp-py"
UNREACHABLE_PACKAGE, STALLED_PACKAGE = "tiny-mcp-gone", "tiny-mcp-slow"
ALLOWED = ",".join(
    [f"npm:{NPM_PACKAGE}", f"pypi:{PYPI_PACKAGE}", f"npm:{UNREACHABLE_PACKAGE}", STALLED_PACKAGE]
)
INSTALL_BOUND = 90.0
REFUSAL_BOUND = 5.0  # the bound: a refused or unreachable install ends this fast

needs_installers = pytest.mark.skipif(
    shutil.which("npm") is None or shutil.which("node") is None,
    reason="needs node and npm on the sandbox host",
)


@pytest.fixture(scope="module")
def registry() -> Iterator[tuple[FakeRegistry, Serving]]:
    packages = FakeRegistry()
    packages.add_npm(NPM_PACKAGE)
    packages.add_npm(UNREACHABLE_PACKAGE)
    packages.add_npm(STALLED_PACKAGE)  # never installed before: npm must fetch its tarball
    packages.add_wheel(PYPI_PACKAGE)
    with serving(packages) as served:
        yield packages, served


@pytest.fixture(scope="module")
def host(
    django_db_setup: None,
    tmp_path_factory: pytest.TempPathFactory,
    registry: tuple[FakeRegistry, Serving],
) -> Iterator[Host]:
    if isolation_tier() != TIER_BUBBLEWRAP:
        pytest.fail("these tests run servers under bubblewrap, which is unavailable here")
    packages, _ = registry
    caches = tmp_path_factory.mktemp("installer-caches")
    overrides = {
        "MATRIX_RUNTIME_PREFETCH_ALLOWED": ALLOWED,
        "npm_config_registry": f"{packages.url}/",
        "npm_config_cache": str(caches / "npm"),
        "UV_INDEX_URL": packages.index_url,
        "UV_CACHE_DIR": str(caches / "uv"),
    }
    with running_host(tmp_path_factory.mktemp("host") / "host.log", **overrides) as running:
        yield running


@pytest.fixture(autouse=True)
def clean(host: Host, registry: tuple[FakeRegistry, Serving]) -> Iterator[None]:
    registry[0].hits.clear()
    cache_remove()
    yield
    end_all_sessions()
    cache_remove()


def cache_remove() -> None:
    cache = prefetch_cache_dir()
    if cache.exists():
        for path in [cache, *cache.rglob("*")]:
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(cache)


def create(api: Any, command: str) -> dict[str, Any]:
    response = api.post(SESSIONS, {"start_command": command})
    assert response.status_code == 202, response.content
    return dict(response.json())


def hello(api: Any, session_id: str) -> str:
    body = {"name": "hello", "arguments": {"who": "you"}}
    response = api.post(f"{SESSIONS}/{session_id}/tools/call", body)
    assert response.status_code == 200, response.content
    return "".join(part["text"] for part in response.json()["result"]["content"])


def by_step(job_id: str, step: str) -> list[JobEvent]:
    return [event for event in events(job_id) if event.step == step]


def tarball_hits(packages: FakeRegistry) -> int:
    return sum(count for path, count in packages.hits.items() if path.endswith((".tgz", ".whl")))


def assert_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            assert not path.stat().st_mode & 0o222, path


def started_in(job_id: str) -> list[str]:
    started = by_step(job_id, "mcp_start")[0]
    assert started.data is not None
    return list(started.data["from_cache"])


@needs_installers
@pytest.mark.parametrize(
    ("first", "again", "package", "ecosystem"),
    [
        (f"npx -y {NPM_PACKAGE}", f"npx --yes {NPM_PACKAGE}@1.0.0", NPM_PACKAGE, "npm"),
        (f"uvx {PYPI_PACKAGE}", f"pipx run {PYPI_PACKAGE}==1.0", PYPI_PACKAGE, "pypi"),
    ],
)
def test_first_launch_installs_then_starts_offline_and_the_next_uses_the_cache(
    api: Any,
    registry: tuple[FakeRegistry, Serving],
    first: str,
    again: str,
    package: str,
    ecosystem: str,
) -> None:
    packages, _ = registry
    created = create(api, first)
    job_id = created["job_id"]
    wait_step(job_id, "ready", INSTALL_BOUND)
    order = steps(job_id)
    install = [status for step, status in order if step == "install"]
    assert install[0] == "start", order
    assert install[-1] == "ok", order
    assert set(install[1:-1]) <= {"progress"}
    # the install comes before the sandbox exists; the server then starts from the cache
    assert order.index(("install", "ok")) < order.index(("sandbox", "start"))
    done = by_step(job_id, "install")[-1]
    assert done.data is not None
    assert done.data["package"] == f"{ecosystem}:{package}"
    assert done.data["registry"].startswith(packages.url)
    cache = prefetch_cache_dir() / ecosystem / package
    argv = started_in(job_id)
    assert argv[1].startswith(str(cache)), argv
    assert done.data["from_cache"] == argv
    assert hello(api, created["session_id"]) == f"hello you from {package}"
    assert_read_only(prefetch_cache_dir())
    fetched = tarball_hits(packages)
    assert fetched >= 1

    second = create(api, again)
    wait_step(second["job_id"], "ready", 30)
    assert not by_step(second["job_id"], "install")
    assert started_in(second["job_id"]) == argv
    assert hello(api, second["session_id"]) == f"hello you from {package}"
    assert tarball_hits(packages) == fetched  # nothing fetched the second time


@pytest.mark.parametrize(
    "command",
    ["npx -y left-pad-server", "uvx requests-server", "pipx run some-tool==2.0"],
)
def test_a_package_off_the_allow_list_ends_at_once_naming_it_and_the_fixes(
    api: Any, registry: tuple[FakeRegistry, Serving], command: str
) -> None:
    packages, _ = registry
    created = create(api, command)
    job = terminal(created["job_id"], REFUSAL_BOUND + 5)
    assert job.status == "error"
    name = command.split()[-1]
    for expected in (name, "MATRIX_RUNTIME_PREFETCH_ALLOWED", "sandbox_prefetch", "allow_network"):
        assert expected in job.error, job.error
    assert ("install", "error") in steps(job.pk)
    assert ("sandbox", "start") not in steps(job.pk)
    assert not packages.hits, packages.hits  # the registry was never asked
    assert not prefetch_cache_dir().exists() or not any(prefetch_cache_dir().rglob("*.json"))


@needs_installers
def test_an_unreachable_registry_ends_the_session_within_five_seconds(
    api: Any, registry: tuple[FakeRegistry, Serving]
) -> None:
    _, served = registry
    with served.unreachable():
        created = create(api, f"npx -y {UNREACHABLE_PACKAGE}")
        job = terminal(created["job_id"], 30)
    started = by_step(job.pk, "install")[0]
    assert job.status == "error"
    assert job.finished_at is not None
    assert (job.finished_at - started.created_at).total_seconds() < REFUSAL_BOUND
    assert f"npm:{UNREACHABLE_PACKAGE}" in job.error
    assert "cannot reach" in job.error, job.error
    assert "sandbox_prefetch" in job.error
    assert not (prefetch_cache_dir() / "npm" / UNREACHABLE_PACKAGE).exists()


@needs_installers
def test_a_session_stopped_during_its_install_kills_the_installer(
    api: Any, registry: tuple[FakeRegistry, Serving]
) -> None:
    packages, _ = registry
    packages.stall.set()
    try:
        created = create(api, f"npx -y {STALLED_PACKAGE}")
        job_id = created["job_id"]
        wait_for(
            lambda: any(path.endswith(".tgz") for path in packages.hits),
            INSTALL_BOUND,
            "npm to ask for the tarball",
        )
        response = api.delete(f"{SESSIONS}/{created['session_id']}")
        assert response.json() == {"ok": True, "status": "cancelled"}
        assert terminal(job_id, 20).status == "cancelled"
        # still stalled: npm cannot finish, so an installer that goes away was killed
        wait_for(lambda: not installers_running(), 15, "the installer to be killed")
    finally:
        packages.stall.clear()
    home = prefetch_cache_dir() / "npm"
    # the installer's thread removes its staging folder once the killed npm is reaped
    wait_for(lambda: not list(home.glob(".staging-*")), 15, "the staging folder to go")
    assert not (home / STALLED_PACKAGE).exists()
    no_session_processes(job_id)


def installers_running() -> list[str]:
    """Command lines of live ``npm install`` processes writing into the cache."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "install" in cmdline and str(prefetch_cache_dir()) in cmdline:
                found.append(cmdline)
    return found


@pytest.mark.parametrize("exists", [True, False])
def test_a_host_path_the_sandbox_cannot_see_ends_at_once_naming_the_setting(
    api: Any, tmp_path: Path, exists: bool
) -> None:
    script = tmp_path / "server" / "index.js"
    if exists:
        script.parent.mkdir()
        script.write_text("console.log('never runs')\n")
    created = create(api, f"node {script}")
    job = terminal(created["job_id"], REFUSAL_BOUND + 5)
    assert job.status == "error"
    assert str(script) in job.error
    if exists:
        assert "MATRIX_RUNTIME_SANDBOX_RO_BINDS" in job.error
        assert str(script.parent) in job.error
    else:
        assert "does not exist on the sandbox host" in job.error
    assert ("validate", "error") in steps(job.pk)
    assert ("mcp_start", "start") not in steps(job.pk)
