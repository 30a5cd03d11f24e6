"""MatrixShell for real: a venv per workspace installed offline by a real job, commands
run under real bubblewrap, the denylist, the timeout, the output cap, the gate.

The install spec is a tiny package directory written here (``matrixsh`` 0.1.0 with a
``matrixsh`` console script) whose build backend lives in the directory itself, so
pip really builds and installs it with ``--no-index``: no network anywhere. The
install runs once per module (the first test that needs it), into a workspace with a
fixed id, so the venv outlives each test's database flush; tests act as the operator
(the operator token) in that workspace (``X-Matrix-Workspace``): the anonymous local-dev
caller acts in the local workspace only.

Each workspace's dir is its own persistent quota file system (sandbox/quota.py) where
this host can mount (root, loop devices): the quota test fills one past its limit
with a real command; the module unmounts every workspace's dir at its end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from accounts.models import AuditEvent, UsageEvent, Workspace
from jobs.models import Job, JobEvent
from jobs.runner import run_job
from matrixcloud.platform.readiness import readiness_warnings
from sandbox import quota
from sandbox.isolation import SANDBOX_UID, TIER_BUBBLEWRAP, isolation_tier, tier_probe
from sandbox.matrixshell.denylist import command_denied
from sandbox.matrixshell.workspace import ShellPaths, shell_disk_mount, shell_quota_support
from tests.factories import bearer, error, signup

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WORKSPACE_ID = "ws_matrixshelltest01"
WORKSPACE_SLUG = "shell-test"
OTHER_ID = "ws_matrixshelltest02"
WHEEL_ID = "ws_matrixshelltest03"
QUOTA_ID = "ws_matrixshelltest04"
QUOTA_MB = 64  # a venv takes ~26 MiB: the smallest quota a real install fits in, with room
MIB = 1024 * 1024
CANARY = "MXC_SHELL_CANARY_SECRET"
OPERATOR_TOKEN = "operator-token-for-matrixshell-tests-0123456789"
DATA_FILES = ("matrixcloud.sqlite3", "secret.key", "django-secret.key")
STATUS, INSTALL, EXEC = "/v1/matrixshell/status", "/v1/matrixshell/install", "/v1/matrixshell/exec"

BACKEND = '''
"""A PEP 517 backend in ~20 lines: builds the matrixsh wheel with zipfile."""
import base64, hashlib, os, zipfile

NAME, VERSION = "matrixsh", "0.1.0"
DIST = f"{NAME}-{VERSION}.dist-info"
FILES = {
    f"{NAME}/__init__.py": open(os.path.join(os.path.dirname(__file__), "..", "src",
                                             "__init__.py")).read(),
    f"{DIST}/METADATA": f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n",
    f"{DIST}/WHEEL": "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\n"
                     "Tag: py3-none-any\\n",
    f"{DIST}/entry_points.txt": f"[console_scripts]\\n{NAME} = {NAME}:main\\n",
}

def _digest(text):
    raw = hashlib.sha256(text.encode()).digest()
    return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    record = [f"{path},{_digest(text)},{len(text.encode())}" for path, text in FILES.items()]
    record.append(f"{DIST}/RECORD,,")
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, text in FILES.items():
            wheel.writestr(path, text)
        wheel.writestr(f"{DIST}/RECORD", "\\n".join(record) + "\\n")
    return name
'''
PACKAGE = """
import sys

def main():
    if "--help" in sys.argv:
        print("usage: matrixsh [--help]  (the matrixsh test shell)")
    return 0
"""
PYPROJECT = """
[build-system]
requires = []
build-backend = "mxbackend"
backend-path = ["backend"]
"""


# --- the module's data dir, package and install ---------------------------------------------


def write_package(root: Path) -> Path:
    """The ``matrixsh`` package dir, readable by the sandbox user (pytest dirs are 0700)."""
    package = root / "matrixsh-src"
    for relative, text in {
        "pyproject.toml": PYPROJECT,
        "backend/mxbackend.py": BACKEND,
        "src/__init__.py": PACKAGE,
    }.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    for path in [package, *package.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return package


@pytest.fixture(scope="module", autouse=True)
def shell_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data dir holding a database file and both keys, MatrixShell on, the local spec."""
    if isolation_tier() != TIER_BUBBLEWRAP:
        pytest.fail(f"MatrixShell runs under bubblewrap, unavailable here: {tier_probe().reason}")
    root = tmp_path_factory.mktemp("matrixshell")
    data = root / "data"
    data.mkdir()
    for name in DATA_FILES:
        (data / name).write_text(f"canary {name}")
        (data / name).chmod(0o600)
    package = write_package(root)
    try:
        with override_settings(
            MATRIX_DATA_DIR=data,
            MATRIX_MATRIXSHELL_ENABLED=True,
            MATRIX_MATRIXSHELL_SPEC=str(package),
        ):
            yield data
    finally:
        unmount_shells(data)


def unmount_shells(data: Path) -> None:
    """Unmount every workspace's quota file system under ``data`` (a test's end)."""
    for root in (data / "matrixshell").glob("ws_*"):
        while os.path.ismount(root):
            assert subprocess.run(["umount", "-l", str(root)], check=False).returncode == 0


def require_quota() -> None:
    support = shell_quota_support()
    if support.tier != quota.TIER_LOOP:
        pytest.skip(f"this host cannot give MatrixShell a disk quota: {support.reason}")


def mounts_on(path: Path) -> int:
    """How many file systems are mounted on ``path`` (the host's mount table)."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return sum(1 for line in lines if line.split()[4] == str(path))


@pytest.fixture(autouse=True)
def host_canary(monkeypatch: pytest.MonkeyPatch) -> str:
    """A secret in the server's own environment, which no command may see."""
    monkeypatch.setenv(CANARY, "do-not-leak")
    return CANARY


@pytest.fixture
def workspace(db: None) -> Workspace:
    """The module's workspace, its id fixed (so its venv survives the flushes)."""
    return Workspace.objects.create(pk=WORKSPACE_ID, slug=WORKSPACE_SLUG, name="Shell Test")


@pytest.fixture(autouse=True)
def operator_token(settings: Any) -> None:
    settings.MATRIX_API_TOKEN = OPERATOR_TOKEN


def as_workspace(slug: str = WORKSPACE_SLUG) -> dict[str, str]:
    """The operator acting in the workspace ``slug``."""
    return {"HTTP_X_MATRIX_WORKSPACE": slug, **bearer(OPERATOR_TOKEN)}


INSTALLS: dict[str, Any] = {}


@pytest.fixture
def installed(api: Any, workspace: Workspace) -> dict[str, Any]:
    """The install job's record: run once per module, through the API and a real job."""
    if not INSTALLS:
        response = api.post(INSTALL, **as_workspace())
        assert response.status_code == 202, response.content
        job_id = response.json()["job_id"]
        assert response.json() == {"job_id": job_id, "events_url": f"/v1/jobs/{job_id}/events"}
        run_job(job_id)  # the worker's task, in this process
        job = Job.objects.get(pk=job_id)
        events = list(JobEvent.objects.filter(job_id=job_id).order_by("seq"))
        INSTALLS.update(
            job_id=job_id,
            status=job.status,
            error=job.error,
            result=job.result,
            events=[(e.step, e.status, e.message) for e in events],
            api=api.get(f"/v1/jobs/{job_id}", **bearer(OPERATOR_TOKEN)).json(),
        )
    assert INSTALLS["status"] == "complete", (INSTALLS["error"], INSTALLS["events"][-8:])
    return INSTALLS


def run(api: Any, command: str, slug: str = WORKSPACE_SLUG) -> Any:
    return api.post(EXEC, {"command": command}, **as_workspace(slug))


def ran(api: Any, command: str) -> dict[str, Any]:
    response = run(api, command)
    assert response.status_code == 200, response.content
    return dict(response.json())


def shell_pids(root: Path) -> list[int]:
    """Host pids whose working directory is the workspace's MatrixShell dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "cwd").startswith(str(root)):
                    found.append(int(entry.name))
    return found


# --- the gate -------------------------------------------------------------------------------


def test_everything_is_403_while_matrixshell_is_off(api, settings, workspace):
    settings.MATRIX_MATRIXSHELL_ENABLED = False
    disabled = error(
        "MatrixShell is disabled (set MATRIX_RUNTIME_MATRIXSHELL_ENABLED=true to enable)", 403
    )
    for response in (
        api.get(STATUS, **as_workspace()),
        api.post(INSTALL, **as_workspace()),
        run(api, "echo hi"),
    ):
        assert (response.status_code, response.json()) == (403, disabled)
    via_jobs = api.post("/v1/jobs", {"type": "matrixshell.install"}, **as_workspace())
    assert via_jobs.status_code == 422
    assert via_jobs.json()["error"] == f"payload: {disabled['error']}"
    assert not Job.objects.exists()
    assert not ShellPaths.for_workspace(OTHER_ID).root.exists()


def test_matrixshell_needs_authentication(api, settings):
    settings.MATRIX_MODE = "cloud-worker"
    assert api.get(STATUS).status_code == 401
    assert api.post(EXEC, {"command": "echo hi"}).status_code == 401


def test_wrong_methods_are_405(api, workspace):
    assert api.post(STATUS, **as_workspace()).status_code == 405
    assert api.get(EXEC, **as_workspace()).status_code == 405


# --- install and status ---------------------------------------------------------------------


def test_install_builds_the_local_package_offline_and_streams_pips_lines(installed, settings):
    steps = [(step, status) for step, status, _ in installed["events"]]
    messages = [message for _, _, message in installed["events"]]
    assert steps[:3] == [("queue", "queued"), ("start", "running"), ("queue", "ok")]
    assert messages[2] == "Preparing MatrixShell sandbox"
    assert steps[-2:] == [("ready", "ok"), ("complete", "complete")]
    paths = ShellPaths.for_workspace(WORKSPACE_ID)
    install_lines = [m for step, _, m in installed["events"] if step == "install"]
    assert install_lines[0] == f"creating python sandbox venv: {paths.venv}"
    spec = settings.MATRIX_MATRIXSHELL_SPEC
    assert f"installing MatrixShell ({spec}) — this is a real pip install" in install_lines
    # pip's own lines, as pip printed them, one event each.
    assert any(line.startswith("Processing ") for line in install_lines), install_lines
    assert "Successfully installed matrixsh-0.1.0" in install_lines
    assert install_lines[-1] == "matrixsh 0.1.0 ready in the sandbox"
    assert messages[-2] == "MatrixShell 0.1.0 installed in sandbox"
    assert installed["result"] == {
        "installed": True,
        "version": "0.1.0",
        "venv": str(paths.venv),
        "sandbox": str(paths.root),
        "python": str(paths.python),
    }
    assert installed["api"]["result"] == installed["result"]
    # Made by the sandbox user, inside the workspace's own dir.
    assert paths.console_script.exists()
    assert paths.root.stat().st_uid == (SANDBOX_UID if os.geteuid() == 0 else os.geteuid())


def test_a_local_wheel_installs_offline_too(api, installed, settings, tmp_path):
    """The spec may be a wheel file: built here by the package's own backend."""
    package = Path(settings.MATRIX_MATRIXSHELL_SPEC)
    sys.path.insert(0, str(package / "backend"))
    try:
        import mxbackend  # the test package's build backend

        wheels = tmp_path / "wheels"
        wheels.mkdir()
        name = mxbackend.build_wheel(str(wheels))
    finally:
        sys.path.remove(str(package / "backend"))
    wheels.chmod(0o755)
    (wheels / name).chmod(0o644)
    settings.MATRIX_MATRIXSHELL_SPEC = str(wheels / name)
    Workspace.objects.create(pk=WHEEL_ID, slug="shell-wheel", name="Wheel")
    try:
        job_id = api.post(INSTALL, **as_workspace("shell-wheel")).json()["job_id"]
        run_job(job_id)
        job = Job.objects.get(pk=job_id)
        assert job.status == "complete", job.error
        assert job.result["version"] == "0.1.0"
        lines = JobEvent.objects.filter(job_id=job_id, step="install").values_list(
            "message", flat=True
        )
        assert f"installing MatrixShell ({wheels / name}) — this is a real pip install" in lines
        assert "Successfully installed matrixsh-0.1.0" in lines
        helped = run(api, "matrixsh --help", slug="shell-wheel").json()
        assert helped["exit_code"] == 0
    finally:
        shutil.rmtree(ShellPaths.for_workspace(WHEEL_ID).root, ignore_errors=True)


def test_status_reports_the_workspaces_install(api, installed, settings):
    paths = ShellPaths.for_workspace(WORKSPACE_ID)
    response = api.get(STATUS, **as_workspace())
    assert response.status_code == 200
    body = response.json()
    support = shell_quota_support()
    bounded = support.tier == quota.TIER_LOOP
    assert body == {
        "installed": True,
        "version": "0.1.0",
        "venv": str(paths.venv),
        "python": str(paths.python),
        "sandbox": str(paths.root),
        "spec": settings.MATRIX_MATRIXSHELL_SPEC,
        "disk_quota": support.tier,
        "disk_quota_reason": support.reason,
        "disk_used_bytes": body["disk_used_bytes"] if bounded else None,
        "disk_limit_bytes": 1024 * MIB if bounded else None,
    }
    if bounded:  # the venv is on the workspace's own file system, and counted
        assert 20 * MIB < body["disk_used_bytes"] < 1024 * MIB
        assert os.path.ismount(paths.root)
        assert quota.mounted_backing(paths.root) == str(paths.image)


def test_another_workspace_has_its_own_uninstalled_shell(api, installed):
    Workspace.objects.create(pk=OTHER_ID, slug="shell-other", name="Other")
    other = ShellPaths.for_workspace(OTHER_ID)
    body = api.get(STATUS, **as_workspace("shell-other")).json()
    assert (body["installed"], body["version"], body["python"]) == (False, "", "")
    assert body["venv"] == str(other.venv)
    response = run(api, "echo hi", slug="shell-other")
    assert response.json() == error("MatrixShell sandbox is not installed yet", 422)


def test_a_signed_up_user_acts_in_their_own_workspace(api, installed):
    _, workspace, token = signup("Sam Shell", "sam@shell.test", "Sam Co")
    body = api.get(STATUS, **bearer(token)).json()
    assert body["installed"] is False
    assert body["sandbox"] == str(ShellPaths.for_workspace(workspace.pk).root)


def test_a_second_install_while_one_is_active_is_409(api, workspace):
    first = api.post(INSTALL, **as_workspace())
    assert first.status_code == 202
    second = api.post(INSTALL, **as_workspace())
    assert second.json() == error("a MatrixShell install is already running in this workspace", 409)
    Job.objects.filter(pk=first.json()["job_id"]).delete()  # never run: not this test's venv


# --- exec -----------------------------------------------------------------------------------


def test_allowed_commands_run_in_the_venv_and_are_audited_and_metered(api, installed):
    paths = ShellPaths.for_workspace(WORKSPACE_ID)
    helped = ran(api, "matrixsh --help")
    assert helped["exit_code"] == 0
    assert "matrixsh" in helped["stdout"]
    assert helped["command"] == "matrixsh --help"
    assert ran(api, 'python -c "print(6*7)"')["stdout"] == "42\n"
    where = ran(api, 'python -c "import sys; print(sys.prefix)"; pwd; echo $HOME')
    assert where["stdout"].split() == [str(paths.venv), str(paths.root), str(paths.root)]
    long = ran(api, "echo " + "x" * 300)
    assert long["stdout"] == "x" * 300 + "\n"
    failed = ran(api, "echo oops >&2; exit 3")
    assert (failed["exit_code"], failed["stderr"], failed["timed_out"]) == (3, "oops\n", False)
    audits = AuditEvent.objects.filter(action="matrixshell.exec").order_by("created_at", "pk")
    targets = [a.target for a in audits]
    assert targets[:2] == ["matrixsh --help", 'python -c "print(6*7)"']
    assert targets[3] == ("echo " + "x" * 300)[:200] + "…"
    assert {a.status for a in audits} == {"success"}
    assert audits.last().meta["exit_code"] == 3
    assert audits.last().actor == "operator"
    usage = UsageEvent.objects.filter(kind="matrixshell.exec", workspace_id=WORKSPACE_ID)
    assert usage.count() == 5


def test_files_persist_in_the_workspace_dir_between_commands(api, installed):
    assert ran(api, "echo kept > note.txt")["exit_code"] == 0
    assert ran(api, "cat note.txt")["stdout"] == "kept\n"


@pytest.mark.parametrize(
    "command",
    ["mkfs.ext4 /dev/sda", "dd if=/dev/zero of=/dev/sda", "shutdown now", "rm -rf /",
     ":(){ :|:& };:", "rm -fr /", "rm -rf /*", "  reboot  "],
)  # fmt: skip
def test_denylisted_commands_are_refused_audited_and_not_run(api, installed, command):
    response = run(api, command)
    assert (response.status_code, response.json()) == (
        403,
        error("refused by safety denylist", 403),
    )
    audit = AuditEvent.objects.get(action="matrixshell.exec")
    assert (audit.status, audit.meta, audit.target) == ("failure", {"reason": "denylist"}, command)
    assert not UsageEvent.objects.filter(kind="matrixshell.exec").exists()


def test_the_denylist_lets_ordinary_commands_through():
    for command in ["ls -la", "python --version", "pip list", "echo hi", "rm -rf ./build"]:
        assert not command_denied(command)


def test_empty_and_missing_commands(api, workspace):
    assert run(api, "   ").json() == error("empty command", 422)
    assert api.post(EXEC, {}, **as_workspace()).status_code == 400


def test_a_command_past_the_timeout_is_killed_with_its_children(api, installed, settings):
    settings.MATRIX_MATRIXSHELL_TIMEOUT = 1.0
    body = ran(api, "sleep 60 & sleep 60; echo never")
    assert (body["exit_code"], body["timed_out"], body["stdout"]) == (-1, True, "")
    assert "ran past 1 s and was killed" in body["stderr"]
    assert shell_pids(ShellPaths.for_workspace(WORKSPACE_ID).root) == []


def test_output_past_the_cap_is_cut_and_the_command_killed(api, installed, settings):
    settings.MATRIX_MATRIXSHELL_OUTPUT_BYTES = 4096
    body = ran(api, "yes matrixshell")
    assert (body["exit_code"], body["truncated"], body["timed_out"]) == (-1, True, False)
    assert len(body["stdout"].encode()) == 4096
    assert body["stdout"].startswith("matrixshell\nmatrixshell\n")
    assert "output passed 4096 bytes" in body["stderr"]


def test_commands_see_neither_the_servers_environment_nor_its_data_dir(
    api, installed, shell_settings
):
    env = ran(api, "env")["stdout"]
    assert CANARY not in env
    assert "DJANGO_SETTINGS_MODULE" not in env
    assert "VIRTUAL_ENV=" + str(ShellPaths.for_workspace(WORKSPACE_ID).venv) in env
    for name in DATA_FILES:
        body = ran(api, f"cat {shell_settings / name}")
        assert body["exit_code"] != 0
        assert "No such file" in body["stderr"]
    assert ran(api, f"ls -a {shell_settings}")["stdout"].split() == [".", "..", "matrixshell"]
    listed = ran(api, f"ls {shell_settings / 'matrixshell'}")["stdout"].split()
    assert listed == [WORKSPACE_ID]
    uid = ran(api, "id -u")["stdout"].strip()
    assert uid == str(SANDBOX_UID if os.geteuid() == 0 else os.geteuid())


# --- the disk quota -------------------------------------------------------------------------


def test_writing_past_the_disk_quota_fails_clearly_and_stays_bounded(api, settings, workspace):
    """The attack: a command writes 96 MiB into a workspace whose quota is 64 MiB."""
    require_quota()
    settings.MATRIX_MATRIXSHELL_DISK_MB = QUOTA_MB
    Workspace.objects.create(pk=QUOTA_ID, slug="shell-quota", name="Quota")
    paths = ShellPaths.for_workspace(QUOTA_ID)
    job_id = api.post(INSTALL, **as_workspace("shell-quota")).json()["job_id"]
    run_job(job_id)
    job = Job.objects.get(pk=job_id)
    assert job.status == "complete", job.error
    before = api.get(STATUS, **as_workspace("shell-quota")).json()
    assert (before["disk_quota"], before["disk_limit_bytes"]) == ("loop-ext4", QUOTA_MB * MIB)
    assert 20 * MIB < before["disk_used_bytes"] < QUOTA_MB * MIB

    fill = "for i in 1 2 3 4 5 6; do head -c 16777216 /dev/zero > fill$i || exit 7; done"
    body = ran_in(api, fill, "shell-quota")
    assert (body["exit_code"], body["disk_full"], body["timed_out"]) == (7, True, False)
    assert "No space left on device" in body["stderr"]
    note = re.search(
        r"matrixshell: the workspace's disk quota is full \((\d+) of (\d+) bytes used; the "
        r"quota is (\d+) MiB, set by MATRIX_RUNTIME_MATRIXSHELL_DISK_MB\): delete files to make "
        r"room, or ask the operator to raise it",
        body["stderr"],
    )
    assert note is not None, body["stderr"]
    assert int(note[2]) == QUOTA_MB * MIB
    assert int(note[3]) == QUOTA_MB
    assert QUOTA_MB * MIB - MIB < int(note[1]) <= QUOTA_MB * MIB
    # From outside: the host holds at most the quota, in the image and under the dir.
    assert paths.image.stat().st_blocks * 512 <= QUOTA_MB * MIB
    assert host_bytes(paths.root) <= QUOTA_MB * MIB
    assert host_bytes(paths.root) > 48 * MIB  # it did fill (the venv and fill1..fill4)
    full = api.get(STATUS, **as_workspace("shell-quota")).json()
    assert full["disk_limit_bytes"] == QUOTA_MB * MIB
    assert QUOTA_MB * MIB - MIB < full["disk_used_bytes"] <= QUOTA_MB * MIB

    # A command within the quota still works once room is made, and the venv is intact.
    later = ran_in(
        api, "rm fill*; echo kept > small.txt; cat small.txt; matrixsh --help", "shell-quota"
    )
    assert (later["exit_code"], later["disk_full"]) == (0, False), later
    assert later["stdout"].startswith("kept\nusage: matrixsh")
    after = api.get(STATUS, **as_workspace("shell-quota")).json()
    assert after["disk_used_bytes"] == pytest.approx(before["disk_used_bytes"], abs=MIB)
    audit = AuditEvent.objects.filter(action="matrixshell.exec").order_by("created_at", "pk")
    assert [a.meta["disk_full"] for a in audit] == [True, False]


def test_the_quota_persists_across_a_remount_and_mounts_once_under_concurrency(api, installed):
    """After a restart (the mount gone, as after a reboot) the same image comes back with
    its files; four callers at once mount it once; a leftover mount of another image is
    replaced by the workspace's own."""
    require_quota()
    paths = ShellPaths.for_workspace(WORKSPACE_ID)
    assert ran(api, "echo survives > restart.txt")["exit_code"] == 0
    unmount_shells(paths.root.parent.parent)
    assert not paths.python.exists()  # the venv lives in the image, not in the bare dir
    errors: list[BaseException] = []

    def mount() -> None:
        try:
            shell_disk_mount(paths, create=False)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=mount) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert mounts_on(paths.root) == 1
    assert quota.mounted_backing(paths.root) == str(paths.image)
    assert ran(api, "cat restart.txt")["stdout"] == "survives\n"

    unmount_shells(paths.root.parent.parent)
    other = paths.image.with_name("leftover.img")
    with open(other, "wb") as handle:
        handle.truncate(8 * MIB)
    for argv in (
        ["mkfs.ext4", "-q", "-F", str(other)],
        ["mount", "-o", "loop", str(other), str(paths.root)],
    ):
        subprocess.run(argv, check=True, timeout=30, capture_output=True)
    try:
        status = api.get(STATUS, **as_workspace()).json()
        assert status["installed"] is True
        assert quota.mounted_backing(paths.root) == str(paths.image)
        assert mounts_on(paths.root) == 1
        assert ran(api, "cat restart.txt")["stdout"] == "survives\n"
    finally:
        other.unlink()


def test_a_zero_quota_turns_it_off_and_says_so(api, installed, settings, shell_settings):
    settings.MATRIX_MATRIXSHELL_DISK_MB = 0
    off = "MATRIX_RUNTIME_MATRIXSHELL_DISK_MB=0 turns the quota off"
    if quota.host_support().tier == quota.TIER_LOOP:
        # A dir already on its image stays there (and bounded) until it is unmounted.
        body = api.get(STATUS, **as_workspace()).json()
        assert (body["disk_quota"], body["disk_limit_bytes"]) == ("loop-ext4", 1024 * MIB)
        assert body["disk_quota_reason"] == f"still on its 1024 MiB image ({off})"
        unmount_shells(shell_settings)
    body = api.get(STATUS, **as_workspace()).json()
    assert body["disk_quota"] == "none"
    assert body["disk_quota_reason"] == off
    assert (body["disk_used_bytes"], body["disk_limit_bytes"]) == (None, None)
    warnings = {warning["code"]: warning["message"] for warning in readiness_warnings()}
    assert warnings["matrixshell_disk_quota_off"] == (
        "MatrixShell's workspace dirs have no disk quota: "
        "MATRIX_RUNTIME_MATRIXSHELL_DISK_MB=0 turns the quota off"
    )
    settings.MATRIX_MATRIXSHELL_ENABLED = False
    assert "matrixshell_disk_quota_off" not in {w["code"] for w in readiness_warnings()}


def ran_in(api: Any, command: str, slug: str) -> dict[str, Any]:
    response = run(api, command, slug=slug)
    assert response.status_code == 200, response.content
    return dict(response.json())


def host_bytes(root: Path) -> int:
    """Bytes the files under ``root`` take on the host (``du``, as an operator sees it)."""
    result = subprocess.run(
        ["du", "-s", "-B1", str(root)], capture_output=True, text=True, check=True, timeout=30
    )
    return int(result.stdout.split()[0])


def test_a_dir_from_before_the_quota_is_carried_into_its_image(settings, tmp_path):
    """An upgrade: a workspace dir that already holds files (no image yet) keeps them on
    its new file system, owned as before; one holding more than the quota is refused with
    a clear error and left as it was; a grown setting grows the image at its next mount."""
    require_quota()
    settings.MATRIX_DATA_DIR = tmp_path / "data"
    owner = SANDBOX_UID if os.geteuid() == 0 else os.geteuid()
    paths = ShellPaths.for_workspace("ws_carried")
    (paths.root / "proj").mkdir(parents=True)
    (paths.root / "proj" / "keep.txt").write_text("from before\n")
    os.chown(paths.root / "proj" / "keep.txt", owner, owner)
    big = ShellPaths.for_workspace("ws_toobig")
    big.root.mkdir(parents=True)
    (big.root / "blob").write_bytes(os.urandom(24 * MIB))
    try:
        assert quota.persistent_mount(paths.root, paths.image, size_mb=16, owner=owner)
        assert quota.mounted_backing(paths.root) == str(paths.image)
        assert (paths.root / "proj" / "keep.txt").read_text() == "from before\n"
        assert (paths.root / "proj" / "keep.txt").stat().st_uid == owner
        assert paths.root.stat().st_uid == owner
        quota.persistent_unmount(paths.root)
        assert list(paths.root.iterdir()) == []  # moved in, not left under the mount point

        assert quota.persistent_mount(paths.root, paths.image, size_mb=24, owner=owner)
        usage = quota.persistent_usage(paths.root, paths.image)
        assert usage is not None
        assert usage.limit_bytes == 24 * MIB
        assert (paths.root / "proj" / "keep.txt").read_text() == "from before\n"

        with pytest.raises(OSError, match=r"holds does not fit in 16 MiB"):
            quota.persistent_mount(big.root, big.image, size_mb=16, owner=owner)
        assert not os.path.ismount(big.root)
        assert not big.image.exists()
        assert (big.root / "blob").stat().st_size == 24 * MIB
    finally:
        unmount_shells(settings.MATRIX_DATA_DIR)


def test_a_hosts_start_leaves_persistent_images_alone(api, installed, shell_settings):
    """The sandbox host's start-up clean-up removes a dead host's scratch disks only: a
    workspace's image (and its mount) is not a leftover."""
    require_quota()
    paths = ShellPaths.for_workspace(WORKSPACE_ID)
    assert ran(api, "echo still > start.txt")["exit_code"] == 0
    assert quota.leftovers_remove(shell_settings / "mcp") == 0
    assert paths.image.exists()
    assert quota.mounted_backing(paths.root) == str(paths.image)
    assert ran(api, "cat start.txt")["stdout"] == "still\n"
