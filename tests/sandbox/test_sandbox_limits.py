"""One sandbox cannot take the host: aggregate cgroup limits, the disk quota, the
per-workspace cap, each attacked for real from inside a bubblewrap
sandbox started by ``isolation.spawn``, as an MCP server is.

The per-process rlimits are set loose here (1 GiB address space and 1,000 processes
each), so what stops each attack is the aggregate limit under test. The cgroup and
quota tests need a root host (CI's is); elsewhere they skip saying why.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from matrixcloud.platform.readiness import readiness_report
from sandbox import cgroups, quota
from sandbox.isolation import (
    TIER_BUBBLEWRAP,
    SandboxLimits,
    SandboxSpec,
    isolation_tier,
    limits_report,
    scratch_owner,
    scratch_prepare,
    spawn,
    terminate_tree,
)
from sandbox.policy import policies_describe
from tests import TESTS_DIR, factories
from tests.factories import bearer

PROBE = TESTS_DIR / "limits_probe.py"
BOUND = 30.0
MIB = 1024 * 1024
LOOSE = SandboxLimits(
    memory_bytes=1024 * MIB,
    max_processes=1000,
    open_files=256,
    file_size_bytes=512 * MIB,
    cpu_seconds=60,
)


def require_cgroups() -> None:
    if isolation_tier() != TIER_BUBBLEWRAP:
        pytest.fail("bubblewrap isolation is required here", pytrace=False)
    support = cgroups.cgroup_support()
    if support.tier == cgroups.TIER_RLIMITS:
        pytest.skip(f"this host cannot make cgroups: {support.reason}")


def require_quota() -> None:
    support = quota.quota_support()
    if support.tier != quota.TIER_LOOP:
        pytest.skip(f"this host cannot give sandboxes a disk quota: {support.reason}")


@pytest.fixture
def data_dir(settings: Any, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    settings.MATRIX_DATA_DIR = data
    settings.MATRIX_SANDBOX_MEMORY_MB = 256
    settings.MATRIX_SANDBOX_MAX_PROCESSES = 32
    settings.MATRIX_SANDBOX_DISK_MB = 32
    return data


def scratch_for(data: Path) -> Path:
    scratch = data / "mcp" / f"sbx_{uuid.uuid4().hex[:12]}"
    scratch_prepare(scratch, tier=isolation_tier())
    return scratch


async def probe(scratch: Path, what: str, n: int) -> tuple[dict[str, Any] | None, set[Path]]:
    """Run the probe, read its line (None if the sandbox died first), stop it; also
    the cgroup dirs the sandbox had, to check they are gone."""
    shutil.copy(PROBE, scratch / "probe.py")
    os.chmod(scratch / "probe.py", 0o644)
    argv = ["python3", "probe.py", f"mxc-limits-{uuid.uuid4().hex}", what, str(n)]
    proc = await spawn(SandboxSpec(argv=argv, scratch_dir=scratch, limits=LOOSE))
    from sandbox.isolation import _CGROUPS

    dirs = set(_CGROUPS[proc.pid].dirs.values()) if proc.pid in _CGROUPS else set()
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), BOUND)
    finally:
        await terminate_tree(proc, grace=0.5)
    return (json.loads(line) if line else None), dirs


def test_processes_together_cannot_pass_the_memory_limit(data_dir):
    """Three processes of 150 MiB each pass a 1 GiB per-process limit, not 256 MiB."""
    require_cgroups()
    result, dirs = asyncio.run(probe(scratch_for(data_dir), "memory", 3))
    assert result is not None
    assert result["alive"] <= 1, result
    assert result["killed"] >= 2, result
    assert dirs
    assert not any(path.exists() for path in dirs)


def test_the_ram_backed_tmp_counts_against_the_memory_limit(data_dir):
    """/tmp is a tmpfs of 512 MiB here; filling 400 MiB of it passes 256 MiB."""
    require_cgroups()
    result, _ = asyncio.run(probe(scratch_for(data_dir), "tmpfs", 400))
    # The writer is killed by the cgroup's OOM killer before it can report, or its
    # write fails; either way it never holds 400 MiB.
    assert result is None or result["written_mib"] < 256, result


def test_a_fork_bomb_stops_at_the_process_limit(data_dir):
    require_cgroups()
    result, dirs = asyncio.run(probe(scratch_for(data_dir), "fork", 500))
    assert result is not None
    assert result["forked"] < 32, result
    assert result["error"] == 11  # EAGAIN: pids.max
    assert not any(path.exists() for path in dirs)


def test_writing_past_the_disk_quota_fails_inside_with_enospc(data_dir):
    require_quota()
    scratch = scratch_for(data_dir)
    assert quota.quota_mount(scratch, owner=scratch_owner(isolation_tier()))
    free_before = shutil.disk_usage(data_dir).free
    try:
        result, _ = asyncio.run(probe(scratch, "disk", 200))
        free_after = shutil.disk_usage(data_dir).free
    finally:
        quota.quota_unmount(scratch)
    assert result is not None
    assert result["error"] == 28, result  # ENOSPC
    assert result["written_mib"] <= 32
    assert free_before - free_after <= 40 * MIB  # the quota, and the image's metadata
    assert not os.path.ismount(scratch)
    assert not list(quota.disks_dir().glob("*.img"))


def test_a_dead_hosts_cgroups_and_disks_are_removed_at_start(data_dir):
    require_cgroups()
    require_quota()
    support = cgroups.cgroup_support()
    dead_pid = 2**22 + 12345  # above pid_max's default: never a live process
    name = f"mxc-{cgroups.installation_key()}.{dead_pid}.1"
    left = [parent / name for parent in support.parents.values()]
    for path in left:
        path.mkdir()
    scratch = scratch_for(data_dir)
    assert quota.quota_mount(scratch)
    image = next(quota.disks_dir().glob("*.img"))
    stale = image.with_name(f"{dead_pid}.{scratch.name}.img")
    image.rename(stale)
    assert cgroups.leftovers_remove() == len(left)
    assert quota.leftovers_remove(data_dir / "mcp") == 1
    assert not any(path.exists() for path in left)
    assert not stale.exists()
    assert not os.path.ismount(scratch)


@pytest.mark.django_db
def test_ready_and_policies_name_the_enforcing_tier():
    report = limits_report()
    ready = readiness_report()
    body = policies_describe(include_paths=False)[0]["body"]["limits"]
    assert ready["limits"] == report["limits_tier"] == body["enforced_by"]
    assert ready["disk_quota"] == report["disk_quota"] == body["disk_quota"]
    if os.geteuid() == 0 and isolation_tier() == TIER_BUBBLEWRAP:
        assert report["limits_tier"] in (cgroups.TIER_V1, cgroups.TIER_V2)
    else:
        codes = [warning["code"] for warning in ready["warnings"]]
        assert "sandbox_limits_per_process" in codes


cast = factories.cast
SESSIONS = "/v1/sandbox/sessions"
COMMAND = "node /opt/servers/everything/dist/index.js stdio"


@pytest.mark.django_db
def test_a_workspace_past_its_live_sandbox_cap_gets_429(api, cast, settings):
    settings.MATRIX_SANDBOX_MAX_PER_WORKSPACE = 2
    token = factories.issue(cast.owner, cast.workspace)
    created = [api.post(SESSIONS, {"start_command": COMMAND}, **bearer(token)) for _ in range(2)]
    assert [response.status_code for response in created] == [202, 202]
    refused = api.post(SESSIONS, {"start_command": COMMAND}, **bearer(token))
    assert refused.status_code == 429
    assert "already has 2 live sandboxes" in refused.json()["error"]
    assert "MATRIX_RUNTIME_SANDBOX_MAX_PER_WORKSPACE=2" in refused.json()["error"]
    job = api.post("/v1/jobs", {"type": "mcp.test", "payload": {"start_command": COMMAND}},
                   **bearer(token))  # fmt: skip
    assert job.status_code == 429  # a session job through /v1/jobs counts the same
    other = factories.issue(cast.outsider, cast.other_workspace)
    assert api.post(SESSIONS, {"start_command": COMMAND}, **bearer(other)).status_code == 202
    gone = api.delete(f"{SESSIONS}/{created[0].json()['session_id']}", **bearer(token))
    assert gone.status_code in (200, 202, 204)
    assert api.post(SESSIONS, {"start_command": COMMAND}, **bearer(token)).status_code == 202
