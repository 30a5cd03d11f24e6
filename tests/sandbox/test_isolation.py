"""Sandbox isolation (sandbox/isolation.py) with a real probe in real sandboxes.

The probe (tests/sandbox_probe.py) runs through ``spawn`` exactly as an MCP server
would, against a temporary data dir holding a database file and both key files. The
bubblewrap tests fail, never skip, where bwrap cannot run: CI installs it
(``.ci/run``), and a machine without it would silently lose these guarantees.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from matrixcloud.platform.readiness import readiness_report
from sandbox import bubblewrap, isolation
from sandbox.isolation import (
    SANDBOX_UID,
    TIER_BUBBLEWRAP,
    TIER_NONE,
    IsolationUnavailable,
    SandboxLimits,
    SandboxSpec,
    SandboxStartError,
    TierProbe,
    build_argv,
    isolation_report,
    isolation_tier,
    spawn,
    terminate_tree,
)
from sandbox.policy import policies_describe
from tests import REPO_ROOT, TESTS_DIR

PROBE = TESTS_DIR / "sandbox_probe.py"
BOUND = 20.0
CANARY = "MXC_TEST_CANARY_SECRET"
DATA_FILES = ("matrixcloud.sqlite3", "secret.key", "django-secret.key")
SMALL_LIMITS = SandboxLimits(
    memory_bytes=1024 * 1024 * 1024,
    max_processes=24,
    open_files=256,
    file_size_bytes=8 * 1024 * 1024,
    cpu_seconds=30,
)


def require_bwrap() -> None:
    if isolation_tier() != TIER_BUBBLEWRAP:
        pytest.fail(
            f"bubblewrap isolation is required here: {isolation.tier_probe().reason}",
            pytrace=False,
        )


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path) -> Path:
    """A data dir with a database file and both keys, as the real one has."""
    data = tmp_path / "data"
    data.mkdir()
    for name in DATA_FILES:
        (data / name).write_text(f"canary {name}")
        (data / name).chmod(0o600)
    settings.MATRIX_DATA_DIR = data
    return data


@pytest.fixture(autouse=True)
def host_canary(monkeypatch: pytest.MonkeyPatch) -> str:
    """A secret in the server's own environment, which no sandbox may see."""
    monkeypatch.setenv(CANARY, "do-not-leak")
    return CANARY


def session(data: Path, config: dict[str, Any], **spec: Any) -> tuple[SandboxSpec, str]:
    """A scratch dir with the probe in it, and a spec that runs it with ``config``."""
    scratch = data / "mcp" / f"sbx_{uuid.uuid4().hex[:12]}"
    scratch.mkdir(parents=True)
    shutil.copy(PROBE, scratch / "probe.py")
    marker = f"mxc-probe-{uuid.uuid4().hex}"
    argv = ["python3", "probe.py", marker, json.dumps(config)]
    spec.setdefault("limits", SMALL_LIMITS)
    return SandboxSpec(argv=argv, scratch_dir=scratch, **spec), marker


async def probe_run(spec: SandboxSpec, tier: str) -> tuple[dict[str, Any], int]:
    """Run the probe to its first line, stop it, and return (its report, exit code)."""
    proc = await spawn(spec, tier=tier)
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), BOUND)
        if not line:
            stderr = await asyncio.wait_for(proc.stderr.read(), BOUND)
            pytest.fail(f"the probe said nothing; stderr: {stderr.decode()}")
    finally:
        code = await terminate_tree(proc, grace=1.0)
    return json.loads(line), code


def run(spec: SandboxSpec, tier: str) -> dict[str, Any]:
    return asyncio.run(probe_run(spec, tier))[0]


def survivors(marker: str) -> list[int]:
    """Host pids whose command line carries ``marker`` (the probe, its forks, bwrap)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def wait_no_survivors(marker: str, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := survivors(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# --- Tier -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_bubblewrap_tier_is_detected_and_reported():
    require_bwrap()
    report = isolation_report()
    assert report["tier"] == TIER_BUBBLEWRAP
    assert report["bwrap"]
    assert report["process_limit_enforced"] is True
    assert report["sandbox_uid"] == (SANDBOX_UID if os.geteuid() == 0 else os.geteuid())
    sandbox_body = policies_describe(include_paths=False)[0]["body"]
    assert sandbox_body["isolation"] == TIER_BUBBLEWRAP
    assert readiness_report()["isolation"] == TIER_BUBBLEWRAP


def test_without_bwrap_the_tier_is_none_and_says_why(monkeypatch):
    monkeypatch.setattr(isolation, "bwrap_path", lambda: None)
    isolation.tier_probe.cache_clear()
    try:
        probe = isolation.tier_probe()
    finally:
        isolation.tier_probe.cache_clear()
    assert probe.tier == TIER_NONE
    assert "not installed" in probe.reason


@pytest.mark.django_db
def test_ready_fails_the_isolation_check_in_production_without_it(settings, monkeypatch):
    monkeypatch.setattr(isolation, "tier_probe", lambda: TierProbe(TIER_NONE, "no userns"))
    settings.MATRIX_PRODUCTION = True
    settings.MATRIX_ALLOW_UNISOLATED = False
    report = readiness_report()
    assert report["checks"]["isolation"] is False
    assert "isolation" in report["error"]
    warnings = {warning["code"]: warning["message"] for warning in report["warnings"]}
    assert warnings["isolation_unavailable"] == "sandboxes run without isolation: no userns"
    settings.MATRIX_ALLOW_UNISOLATED = True
    assert readiness_report()["checks"]["isolation"] is True


@pytest.mark.django_db
def test_ready_in_local_dev_warns_but_has_no_isolation_check(monkeypatch):
    monkeypatch.setattr(isolation, "tier_probe", lambda: TierProbe(TIER_NONE, "no userns"))
    report = readiness_report()
    assert "isolation" not in report["checks"]
    assert report["isolation"] == TIER_NONE
    assert "isolation_unavailable" in [warning["code"] for warning in report["warnings"]]


def test_production_refuses_unisolated_sandboxes_unless_allowed(settings, data_dir):
    spec, _ = session(data_dir, {})
    settings.MATRIX_PRODUCTION = True
    settings.MATRIX_ALLOW_UNISOLATED = False
    with pytest.raises(IsolationUnavailable, match="MATRIX_RUNTIME_ALLOW_UNISOLATED=1") as info:
        build_argv(spec, tier=TIER_NONE)
    assert info.value.http_status == 503
    settings.MATRIX_ALLOW_UNISOLATED = True
    argv, _ = build_argv(spec, tier=TIER_NONE)
    assert argv[-4:] == list(spec.argv)


# --- The command line -------------------------------------------------------------------


@pytest.fixture
def handshake() -> Iterator[bubblewrap.UsernsHandshake]:
    pipes = bubblewrap.UsernsHandshake()
    yield pipes
    pipes.close()


def test_argv_binds_nothing_of_the_data_dir_and_carries_no_env(data_dir, handshake):
    require_bwrap()
    spec, _ = session(data_dir, {}, env={"API_TOKEN": "resolved-secret-value"})
    argv, env = build_argv(spec, tier=TIER_BUBBLEWRAP, handshake=handshake)
    assert "resolved-secret-value" not in " ".join(argv)
    assert env["API_TOKEN"] == "resolved-secret-value"
    assert {"--unshare-user", "--unshare-pid", "--unshare-net", "--die-with-parent"} <= set(argv)
    assert "--new-session" in argv
    assert argv[argv.index("--cap-drop") :][:2] == ["--cap-drop", "ALL"]
    bound = [argv[i + 1] for i, arg in enumerate(argv) if arg in ("--bind", "--ro-bind")]
    assert str(spec.scratch_dir) in bound
    for path in map(Path, bound):
        assert path == spec.scratch_dir or not path.is_relative_to(data_dir), path
        assert not data_dir.is_relative_to(path), path
    assert "/" not in bound


def test_network_is_shared_only_when_allowed(data_dir, handshake):
    require_bwrap()
    spec, _ = session(data_dir, {}, allow_network=True)
    argv, _ = build_argv(spec, tier=TIER_BUBBLEWRAP, handshake=handshake)
    assert "--unshare-net" not in argv


@pytest.mark.parametrize(
    "bind", ["data", "parent", "mcp", "other"], ids=["data dir", "its parent", "mcp", "sibling"]
)
def test_binds_that_would_show_the_data_dir_are_refused(data_dir, bind):
    spec, _ = session(data_dir, {})
    other = data_dir / "mcp" / "sbx_other"
    other.mkdir()
    path = {"data": data_dir, "parent": data_dir.parent, "mcp": data_dir / "mcp", "other": other}
    bad = SandboxSpec(argv=spec.argv, scratch_dir=spec.scratch_dir, ro_binds=[path[bind]])
    with pytest.raises(ValueError, match="data dir"):
        bubblewrap.visible_binds(bad)


def test_reserved_env_never_reaches_a_sandbox(data_dir):
    spec, _ = session(data_dir, {}, env={"LD_PRELOAD": "/tmp/evil.so"})
    with pytest.raises(ValueError, match="LD_PRELOAD"):
        build_argv(spec, tier=TIER_NONE)


# --- Both tiers -------------------------------------------------------------------------


TIERS = [TIER_BUBBLEWRAP, TIER_NONE]


@pytest.mark.parametrize("tier", TIERS)
def test_clean_environment_and_scratch_as_cwd_and_home(data_dir, tier):
    if tier == TIER_BUBBLEWRAP:
        require_bwrap()
    spec, _ = session(data_dir, {}, env={"GREETING": "hello"})
    report = run(spec, tier)
    scratch = str(spec.scratch_dir)
    assert CANARY not in report["env"]
    assert set(report["env"]) - {"PWD"} == {"PATH", "HOME", "LANG", "TMPDIR", "GREETING"}
    assert report["env"]["GREETING"] == "hello"
    assert report["cwd"] == scratch
    assert report["env"]["HOME"] == scratch


@pytest.mark.parametrize("tier", TIERS)
def test_rlimits_apply_inside(data_dir, tier):
    if tier == TIER_BUBBLEWRAP:
        require_bwrap()
    spec, _ = session(data_dir, {"limits": True})
    limits = run(spec, tier)["limits"]
    assert limits == {
        "memory_bytes": SMALL_LIMITS.memory_bytes,
        "max_processes": SMALL_LIMITS.max_processes,
        "open_files": SMALL_LIMITS.open_files,
        "file_size_bytes": SMALL_LIMITS.file_size_bytes,
        "cpu_seconds": SMALL_LIMITS.cpu_seconds,
        "core": 0,
    }


def test_unisolated_group_is_killed_with_its_daemon_child(data_dir):
    spec, marker = session(data_dir, {"daemon": "same-group", "linger": True})
    report, _ = asyncio.run(probe_run(spec, TIER_NONE))
    assert report["pid"] > 0
    assert wait_no_survivors(marker) == []


def test_large_lines_come_through_stdout(data_dir):
    size = 3 * 1024 * 1024
    spec = SandboxSpec(
        argv=[sys.executable, "-c", f"print('x' * {size})"],
        scratch_dir=data_dir / "mcp" / "sbx_large",
        limits=SMALL_LIMITS,
    )

    async def read() -> int:
        proc = await spawn(spec, tier=isolation_tier())
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), BOUND)
        await terminate_tree(proc)
        return len(line)

    assert asyncio.run(read()) == size + 1


# --- Bubblewrap only ------------------------------------------------------------------


def test_sandbox_cannot_read_the_database_or_the_keys(data_dir):
    require_bwrap()
    paths = [str(data_dir / name) for name in DATA_FILES]
    project = str(REPO_ROOT)
    spec, _ = session(data_dir, {"read": paths, "list": [str(data_dir), "/", project]})
    report = run(spec, TIER_BUBBLEWRAP)
    assert report["reads"] == dict.fromkeys(paths, "FileNotFoundError")
    assert report["lists"][str(data_dir)] == ["mcp"]
    assert not {"home", "var", "opt", "srv", "mnt", "boot"} & set(report["lists"]["/"])
    # The venv is bound (python servers use it); the project's code and settings are not.
    assert "manage.py" not in report["lists"][project]


def test_sandbox_reads_the_system_and_runs_node(data_dir):
    require_bwrap()
    system = ["/etc/passwd", "/etc/ssl/openssl.cnf", "/etc/ld.so.cache", sys.executable]
    spec, _ = session(data_dir, {"read": [path for path in system if Path(path).exists()]})
    assert set(run(spec, TIER_BUBBLEWRAP)["reads"].values()) == {"read"}
    node = SandboxSpec(
        argv=["node", "-e", "console.log(require('crypto').randomUUID().length)"],
        scratch_dir=data_dir / "mcp" / "sbx_node",
    )

    async def scenario() -> bytes:
        proc = await spawn(node, tier=TIER_BUBBLEWRAP)
        out, err = await asyncio.wait_for(proc.communicate(), BOUND)
        assert proc.returncode == 0, err
        return out

    assert asyncio.run(scenario()) == b"36\n"


def test_sandbox_cannot_write_outside_its_scratch(data_dir):
    require_bwrap()
    scratch_name = "written-in-scratch"
    targets = {
        "data": str(data_dir / "planted"),
        "key": str(data_dir / "secret.key"),
        "usr": "/usr/planted",
        "etc": "/etc/passwd",
        "venv": str(Path(sys.prefix) / "planted"),
        "python": str(Path(sys.base_prefix) / "planted"),
    }
    spec, _ = session(data_dir, {"write": [*targets.values(), scratch_name, "/tmp/planted"]})
    writes = run(spec, TIER_BUBBLEWRAP)["writes"]
    for name, path in targets.items():
        assert writes[path] != "written", name
        assert not Path(path).exists() or name in ("key", "etc"), name
    assert (data_dir / "secret.key").read_text() == "canary secret.key"
    assert writes[scratch_name] == "written"
    assert (spec.scratch_dir / scratch_name).read_text() == "probe"
    assert writes["/tmp/planted"] == "written"  # its own private /tmp
    assert not Path("/tmp/planted").exists()


def test_sandbox_cannot_see_other_sessions(data_dir):
    require_bwrap()
    other = data_dir / "mcp" / "sbx_other"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text("another session's file")
    spec, _ = session(data_dir, {"read": [str(other / "notes.txt")], "list": [str(other)]})
    report = run(spec, TIER_BUBBLEWRAP)
    assert report["reads"][str(other / "notes.txt")] == "FileNotFoundError"
    assert report["lists"][str(other)] == "FileNotFoundError"


def test_sandbox_cannot_reach_host_loopback(data_dir):
    require_bwrap()
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        spec, _ = session(data_dir, {"connect": port})
        assert run(spec, TIER_BUBBLEWRAP)["connect"] != "connected"
        allowed, _ = session(data_dir, {"connect": port}, allow_network=True)
        assert run(allowed, TIER_BUBBLEWRAP)["connect"] == "connected"


def test_sandbox_runs_unprivileged_in_its_own_pid_namespace(data_dir):
    require_bwrap()
    spec, _ = session(data_dir, {"limits": True})
    report = run(spec, TIER_BUBBLEWRAP)
    uid = SANDBOX_UID if os.geteuid() == 0 else os.geteuid()
    assert report["status"]["Uid"].split() == [str(uid)] * 4
    assert report["status"]["CapEff"] == report["status"]["CapPrm"] == "0000000000000000"
    assert report["status"]["NoNewPrivs"] == "1"
    assert report["pid"] < 10
    assert len(report["procs"]) < 5


def test_fork_bomb_is_stopped_by_the_process_limit(data_dir):
    require_bwrap()
    spec, marker = session(data_dir, {"fork_bomb": 400})
    report = run(spec, TIER_BUBBLEWRAP)
    assert report["fork_bomb"]["error"] == "BlockingIOError"
    assert report["fork_bomb"]["forked"] < SMALL_LIMITS.max_processes
    assert wait_no_survivors(marker) == []
    assert subprocess.run(["true"], check=False, timeout=BOUND).returncode == 0


def test_terminate_tree_leaves_no_survivors(data_dir):
    require_bwrap()
    config = {"daemon": "setsid", "ignore_term": True, "linger": True}
    spec, marker = session(data_dir, config)

    async def scenario() -> list[int]:
        proc = await spawn(spec, tier=TIER_BUBBLEWRAP)
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), BOUND)
        running = survivors(marker)
        await terminate_tree(proc, grace=0.5)
        return running

    running = asyncio.run(scenario())
    assert len(running) >= 3  # bwrap, its init, the probe and the daemon grandchild
    assert wait_no_survivors(marker) == []


def test_a_failed_uid_mapping_stops_bwrap_and_says_why(data_dir, monkeypatch):
    require_bwrap()
    if os.geteuid() != 0:
        pytest.skip("only a root host maps the sandbox uid itself")

    def refuse(self: bubblewrap.UsernsHandshake) -> None:
        raise OSError("uid_map refused")

    monkeypatch.setattr(bubblewrap.UsernsHandshake, "complete", refuse)
    spec, marker = session(data_dir, {"linger": True})
    with pytest.raises(SandboxStartError, match="bubblewrap failed to start"):
        asyncio.run(asyncio.wait_for(spawn(spec, tier=TIER_BUBBLEWRAP), BOUND))
    assert wait_no_survivors(marker) == []
