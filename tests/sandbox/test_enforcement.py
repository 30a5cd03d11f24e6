"""What this host enforces on sandboxes (sandbox/enforcement.py), probed for real.

The summary is computed from the real probes on this machine (bwrap installed, run as
root here, so bubblewrap, a cgroup per sandbox and loop-mounted quotas); a missing
bwrap is a PATH without it, so the probe finds nothing to run, exactly as on a host
that never installed it. The same lines reach ``/v1/ready`` as warnings and the console
as a banner; a sandbox page collapses install progress and counts refused connections.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from matrixcloud.console.selectors import job_events
from matrixcloud.platform.readiness import readiness_warnings
from sandbox import cgroups, enforcement, isolation, quota
from sandbox.enforcement import (
    OK,
    WEAK,
    enforcement_summary,
    install_command,
    userns_fix,
)
from sandbox.host.records import events_emit
from sandbox.models import SandboxSession
from sandbox.services import sandbox_create
from tests import factories
from tests.factories import PASSWORD, actor_of

cast = factories.cast
COMMAND = "node /opt/servers/everything/dist/index.js stdio"
PACKAGE = "npm:@modelcontextprotocol/server-everything"


def path_without(program: str, bin_dir: Path) -> str:
    """A PATH of one dir that links every program on this PATH except ``program``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        folder = Path(directory)
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            link = bin_dir / entry.name
            if entry.name != program and not link.is_symlink() and not link.exists():
                link.symlink_to(entry)
    return str(bin_dir)


path_without.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture
def fresh_probes() -> Iterator[None]:
    """Probe again in this test, and again after it (the probes are cached per process)."""
    isolation.tier_probe.cache_clear()
    quota.quota_support.cache_clear()
    yield
    isolation.tier_probe.cache_clear()
    quota.quota_support.cache_clear()


@pytest.fixture
def no_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_probes: None) -> None:
    monkeypatch.setenv("PATH", path_without("bwrap", tmp_path / "bin"))


def lines_by_key() -> dict[str, enforcement.EnforcementLine]:
    return {line.key: line for line in enforcement_summary().lines}


# --- On this host ----------------------------------------------------------------------


def test_this_host_runs_sandboxes_under_bubblewrap_offline(settings, fresh_probes):
    settings.MATRIX_MATRIXSHELL_ENABLED = False
    lines = lines_by_key()
    assert list(lines) == ["isolation", "limits", "disk_quota", "network", "egress"]
    assert (lines["isolation"].level, lines["isolation"].tier) == (OK, "bubblewrap")
    assert lines["isolation"].text == isolation.tier_probe().reason
    assert (lines["network"].level, lines["network"].tier) == (OK, "offline")
    assert "MATRIX_RUNTIME_SANDBOX_ALLOW_NETWORK is off" in lines["network"].text
    assert lines["network"].sentence().startswith("network: offline - each sandbox has an empty")
    assert (lines["egress"].level, lines["egress"].tier) == (OK, "allowlist per session")
    assert "MATRIX_RUNTIME_EGRESS_CEILING: empty" in lines["egress"].text


def test_limits_name_the_cgroup_tier_and_its_limits(settings, fresh_probes):
    settings.MATRIX_SANDBOX_MEMORY_MB, settings.MATRIX_SANDBOX_CPUS = 512, 0.5
    settings.MATRIX_SANDBOX_MAX_PROCESSES = 64
    limits = lines_by_key()["limits"]
    support = cgroups.cgroup_support()
    if support.tier == cgroups.TIER_RLIMITS:  # not root, or no delegated controllers
        assert (limits.level, limits.warning) == (WEAK, "sandbox_limits_per_process")
        assert support.reason in limits.text
        assert limits.fix is not None
        return
    assert (limits.level, limits.tier) == (OK, support.tier)
    assert limits.text.startswith("each sandbox's cgroup caps memory at 512 MiB")
    assert "64 processes and 0.5 CPU" in limits.text
    assert limits.fix is None


def test_a_root_host_with_bubblewrap_is_at_the_production_default(settings, fresh_probes):
    settings.MATRIX_MATRIXSHELL_ENABLED = True
    summary = enforcement_summary()
    at_default = (
        os.geteuid() == 0
        and cgroups.cgroup_support().tier != cgroups.TIER_RLIMITS
        and quota.host_support().tier == quota.TIER_LOOP
    )
    assert summary.at_default is at_default
    if at_default:  # this machine: no banner, no enforcement warning
        assert summary.weak == ()
        assert summary.warnings() == []
        assert [line.key for line in summary.lines][3] == "matrixshell_quota"
    else:
        assert summary.weak
        assert all(line.fix for line in summary.weak)


# --- Weaker than the default ------------------------------------------------------------


def test_without_bwrap_it_says_unisolated_and_the_command_that_installs_it(no_bwrap):
    assert isolation.bwrap_path() is None
    lines = lines_by_key()
    line = lines["isolation"]
    assert (line.level, line.tier) == (WEAK, "unisolated")
    assert line.text == "sandboxes run without isolation: bwrap is not installed"
    command = install_command("bubblewrap")
    if enforcement.os_release().get("ID") == "debian":
        assert command == "apt-get install -y bubblewrap"  # this machine, as root
    assert line.fix is not None
    assert (line.fix.advice, line.fix.command) == ("install bubblewrap", command)
    assert line.sentence() == (
        "warning: isolation: unisolated - sandboxes run without isolation: bwrap is not "
        f"installed; to fix, install bubblewrap: {command}"
    )
    # Without bubblewrap there is no cgroup moment and no network namespace either.
    assert (lines["limits"].level, lines["limits"].tier) == (WEAK, "rlimits")
    assert "sandboxes are not under bubblewrap" in lines["limits"].text
    assert "2048 MiB address space" in lines["limits"].text
    assert lines["limits"].fix is not None
    assert lines["limits"].fix.command == command
    assert (lines["network"].level, lines["network"].tier) == (WEAK, "host")
    assert lines["network"].fix is not None
    assert lines["network"].fix.command == command
    # ... so no session's allowlist can be enforced either
    assert (lines["egress"].level, lines["egress"].warning) == (WEAK, "sandbox_egress_unenforced")
    assert lines["egress"].fix is not None
    assert lines["egress"].fix.command == command


def test_without_bwrap_ready_warns_with_the_fix(no_bwrap):
    warnings = {warning["code"]: warning for warning in readiness_warnings()}
    command = install_command("bubblewrap")
    assert warnings["isolation_unavailable"] == {
        "code": "isolation_unavailable",
        "message": "sandboxes run without isolation: bwrap is not installed",
        "fix": f"install bubblewrap: {command}",
    }
    assert (
        warnings["sandbox_network_host"]["fix"]
        == f"isolate sandboxes, install bubblewrap: {command}"
    )
    assert "sandbox_limits_per_process" in warnings


def test_allowing_network_is_weaker_and_says_which_setting(settings, fresh_probes):
    settings.MATRIX_SANDBOX_ALLOW_NETWORK = True
    line = lines_by_key()["network"]
    assert (line.level, line.tier) == (WEAK, "offline, open on request")
    assert "MATRIX_RUNTIME_SANDBOX_ALLOW_NETWORK permits" in line.text
    assert line.fix is not None
    assert (
        line.fix.advice
        == "unset MATRIX_RUNTIME_SANDBOX_ALLOW_NETWORK (every sandbox stays offline)"
    )
    assert "sandbox_network_allowed" in {warning["code"] for warning in readiness_warnings()}
    settings.MATRIX_SANDBOX_ALLOW_NETWORK = False
    assert "sandbox_network_allowed" not in {warning["code"] for warning in readiness_warnings()}


def test_a_zero_disk_quota_names_the_setting(settings, fresh_probes):
    settings.MATRIX_SANDBOX_DISK_MB = 0
    line = lines_by_key()["disk_quota"]
    assert (line.level, line.tier, line.warning) == (WEAK, "none", "sandbox_disk_quota_off")
    assert line.text == (
        "sandboxes have no disk quota: MATRIX_RUNTIME_SANDBOX_DISK_MB=0 turns the quota off"
    )
    assert line.fix is not None
    assert str(line.fix) == "set MATRIX_RUNTIME_SANDBOX_DISK_MB to a size in MiB"


def test_the_matrixshell_quota_line_is_there_only_with_matrixshell(settings, fresh_probes):
    settings.MATRIX_MATRIXSHELL_ENABLED = False
    assert "matrixshell_quota" not in lines_by_key()
    settings.MATRIX_MATRIXSHELL_ENABLED = True
    settings.MATRIX_MATRIXSHELL_DISK_MB = 0
    line = lines_by_key()["matrixshell_quota"]
    assert (line.level, line.label, line.warning) == (
        WEAK,
        "MatrixShell disk quota",
        "matrixshell_disk_quota_off",
    )
    assert line.fix is not None
    assert line.fix.advice == "set MATRIX_RUNTIME_MATRIXSHELL_DISK_MB to a size in MiB"


# --- Fixes for this machine ------------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "command"),
    [
        ('ID=debian\nVERSION_ID="12"\n', "apt-get install -y bubblewrap"),
        ('ID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n', "apt-get install -y bubblewrap"),
        ('NAME="Fedora Linux"\nID=fedora\n', "dnf install -y bubblewrap"),
        ('ID="rocky"\nID_LIKE="rhel centos fedora"\n', "dnf install -y bubblewrap"),
        ("ID=alpine\nVERSION_ID=3.20.0\n", "apk add bubblewrap"),
        ('ID="opensuse-tumbleweed"\nID_LIKE="opensuse suse"\n', "zypper install -y bubblewrap"),
        ("ID=arch\n", "pacman -S --noconfirm bubblewrap"),
        ("# no id at all\nNAME=Plan9\n", ""),
    ],
)
def test_the_install_command_follows_os_release(tmp_path, release, command):
    path = tmp_path / "os-release"
    path.write_text(release)
    assert install_command("bubblewrap", release=path, euid=0) == command
    expected = f"sudo {command}" if command else ""
    assert install_command("bubblewrap", release=path, euid=1000) == expected


def test_an_unknown_system_gets_advice_instead_of_a_command(tmp_path):
    fix = enforcement.install_fix("bubblewrap", release=tmp_path / "missing")
    assert (fix.advice, fix.command) == (
        "install the bubblewrap package with this system's package manager",
        "",
    )


def test_a_sysctl_that_forbids_user_namespaces_is_named(tmp_path):
    (tmp_path / "kernel").mkdir()
    (tmp_path / "kernel" / "apparmor_restrict_unprivileged_userns").write_text("0\n")
    (tmp_path / "kernel" / "unprivileged_userns_clone").write_text("0\n")
    fix = userns_fix(tmp_path)
    assert fix.command.endswith("sysctl -w kernel.unprivileged_userns_clone=1")
    (tmp_path / "kernel" / "apparmor_restrict_unprivileged_userns").write_text("1\n")
    assert userns_fix(tmp_path).command.endswith(
        "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
    )
    (tmp_path / "kernel" / "apparmor_restrict_unprivileged_userns").unlink()
    (tmp_path / "kernel" / "unprivileged_userns_clone").write_text("1\n")
    assert userns_fix(tmp_path).command == ""


def test_a_new_line_source_is_printed_in_its_place(monkeypatch):
    """The extension point: a source listed in LINE_SOURCES is one more line."""
    extra = enforcement.EnforcementLine(
        "egress", "egress", WEAK, "test", "a test line", warning="test_line"
    )
    monkeypatch.setattr(
        enforcement, "LINE_SOURCES", (*enforcement.LINE_SOURCES, lambda: extra, lambda: None)
    )
    summary = enforcement_summary()
    assert summary.lines[-1] is extra
    assert extra in summary.weak
    assert {"code": "test_line", "message": "a test line"} in readiness_warnings()


# --- The console ---------------------------------------------------------------------------


def signed_in(email: str) -> Client:
    client = Client(REMOTE_ADDR="127.0.0.1")
    response = client.post("/login", {"email": email, "password": PASSWORD})
    assert response.status_code == 302, response.content
    return client


def session_of(workspace: object) -> SandboxSession:
    return sandbox_create(start_command=COMMAND, env=None, ttl_seconds=0, actor=actor_of(workspace))


@pytest.mark.django_db
def test_the_banner_shows_what_is_weaker_and_the_fix(settings, cast, fresh_probes):
    client = signed_in(cast.owner.email)
    session = session_of(cast.workspace)
    pages = ("/console/", f"/console/sandboxes/{session.pk}")
    at_default = enforcement_summary().at_default
    for page in pages:
        html = client.get(page).content.decode()
        assert ('id="enforcement"' in html) is not at_default, page
    settings.MATRIX_SANDBOX_ALLOW_NETWORK = True
    for page in pages:
        html = client.get(page).content.decode()
        assert "Sandboxes here are less isolated than in production" in html, page
        assert "<strong>network: offline, open on request</strong>" in html
        assert "To fix, unset MATRIX_RUNTIME_SANDBOX_ALLOW_NETWORK" in html
    overview = client.get("/console/").content.decode()
    assert 'id="enforcement-lines"' in overview
    # Said once: the banner, not again in the warnings list below it.
    assert "<code>sandbox_network_allowed</code>" not in overview


@pytest.mark.django_db
def test_another_workspaces_sandbox_page_is_404_banner_or_not(settings, cast):
    settings.MATRIX_SANDBOX_ALLOW_NETWORK = True
    session = session_of(cast.other_workspace)
    response = signed_in(cast.owner.email).get(f"/console/sandboxes/{session.pk}")
    assert response.status_code == 404


def install_events(count: int) -> list[tuple[str, str, str, dict[str, object] | None]]:
    start = [("install", "start", f"Installing {PACKAGE}", {"package": PACKAGE})]
    progress = [
        (
            "install",
            "progress",
            f"Installing {PACKAGE}",
            {"package": PACKAGE, "elapsed_s": n / 10, "fetched": n, "line": f"GET {n}"},
        )
        for n in range(1, count + 1)
    ]
    return [*start, *progress]  # type: ignore[list-item]


def egress_denied(host: str, port: int) -> tuple[str, str, str, dict[str, object]]:
    return ("egress_denied", "denied", f"refused {host}:{port}", {"host": host, "port": port})


@pytest.mark.django_db
def test_install_progress_is_one_row_and_refusals_are_counted(cast):
    session = session_of(cast.workspace)
    denied = [egress_denied("example.com", 443), egress_denied("evil.test", 80)]
    events_emit(session.job_id, [*install_events(200), denied[0], denied[1], denied[0]])
    events_emit(session.job_id, [("install", "ok", f"Installed {PACKAGE}", {"package": PACKAGE})])
    events_emit(session.job_id, [denied[0]])

    rows = [row for row in job_events(session.job) if row.step in ("install", "egress_denied")]
    assert [(row.step, row.status) for row in rows] == [
        ("install", "start"),
        ("install", "progress"),
        ("egress_denied", "denied"),
        ("egress_denied", "denied"),
        ("install", "ok"),
    ]
    progress = rows[1]
    assert progress.detail == f"{PACKAGE} · 200 fetched · 20.0 s · GET 200"
    assert [(row.detail, row.count) for row in rows[2:4]] == [
        ("example.com:443", 3),
        ("evil.test:80", 1),
    ]
    last_seq = session.job.events.order_by("-seq").values_list("seq", flat=True)[0]
    assert rows[2].seq == last_seq  # the page's script resumes after the latest

    html = signed_in(cast.owner.email).get(f"/console/sandboxes/{session.pk}").content.decode()
    assert html.count('data-collapse="install:') == 1
    assert "200 fetched · 20.0 s · GET 200" in html
    assert "199 fetched" not in html
    assert '<span class="detail">example.com:443</span> <span class="count" data-count="3">' in html
    assert '<span class="detail">evil.test:80</span> <span class="count" data-count="1">' in html
