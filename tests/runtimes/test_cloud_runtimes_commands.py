"""The runtime commands and the join agent: ``mint_join_token``, ``prune``, ``join`` and
``runtime_heartbeat`` against a real server on loopback (pytest-django's live server),
and what a heartbeat reports, read from a real ``nvidia-smi`` stand-in on PATH and a real
Ollama-like HTTP server on loopback."""

from __future__ import annotations

import io
import json
import stat
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.models import PasswordReset, SessionToken
from accounts.services import session_issue, user_signup
from jobs.choices import JobStatus
from jobs.models import Job, JobEvent
from matrixcloud.lib.pruning import prune_all as prune
from runtimes import agent
from runtimes.detection import clear_cache
from runtimes.models import JoinToken, Runtime
from runtimes.services import join_token_issue, runtime_token_revoke
from tests.factories import actor_of
from tests.runtimes.test_join_e2e import free_port

SMI_OUTPUT = "NVIDIA H200, 143771, 143197\nNVIDIA A10G, 23028, [N/A]\nNVIDIA L4, 23034, 22000\n"


@pytest.fixture
def membership(db):
    issued = user_signup(name="Cy", email="cy@example.com", password="a long passphrase 1")
    return issued.membership


@pytest.fixture
def data_dir(tmp_path, settings) -> Path:
    settings.MATRIX_DATA_DIR = tmp_path / "data"
    settings.MATRIX_DATA_DIR.mkdir()
    return settings.MATRIX_DATA_DIR


def run(*args: str, **options: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


# --- mint_join_token --------------------------------------------------------------------


def test_mint_join_token_prints_only_the_secret(membership):
    out, err = run("mint_join_token", "--workspace", membership.workspace.slug, "--max-uses", "3",
                   "--label", "cli", "--ttl-minutes", "90")  # fmt: skip
    secret = out.strip()
    assert secret.startswith("mxrt_")
    assert len(secret) == 69
    token = JoinToken.objects.get()
    assert token.label == "cli"
    assert token.max_uses == 3
    assert token.pk in err
    assert secret not in err
    assert abs((token.expires_at - timezone.now()) - timedelta(minutes=90)) < timedelta(minutes=1)


def test_mint_join_token_refuses_bad_input(membership):
    with pytest.raises(CommandError, match="no workspace 'nowhere'"):
        run("mint_join_token", "--workspace", "nowhere")
    with pytest.raises(CommandError, match="ttl_minutes must be between 1 and 43200"):
        run("mint_join_token", "--workspace", membership.workspace.pk, "--ttl-minutes", "-5")
    assert not JoinToken.objects.exists()


# --- prune ----------------------------------------------------------------------------------


def _job(membership: Any, status: str, finished_hours_ago: float | None) -> Job:
    now = timezone.now()
    finished = now - timedelta(hours=finished_hours_ago) if finished_hours_ago else None
    job = Job.objects.create(
        workspace=membership.workspace, type="mcp.test", status=status, ttl_seconds=60,
        expires_at=now + timedelta(minutes=1), finished_at=finished,
    )  # fmt: skip
    for seq, terminal in ((1, False), (2, False), (3, status in JobStatus.terminal())):
        JobEvent.objects.create(
            job=job, seq=seq, step="s", status="info", message="m", terminal=terminal
        )
    return job


def test_prune_deletes_only_what_is_past_retention(membership, data_dir):
    now = timezone.now()
    workspace, user = membership.workspace, membership.user
    old_token = join_token_issue(ttl_minutes=60, actor=actor_of(workspace, name=str(user.pk))).token
    JoinToken.objects.filter(pk=old_token.pk).update(expires_at=now - timedelta(days=8))
    fresh = join_token_issue(actor=actor_of(workspace, name=str(user.pk))).token
    ended = session_issue(user=user, membership=membership).session
    SessionToken.objects.filter(pk=ended.pk).update(revoked_at=now - timedelta(days=9))
    PasswordReset.objects.create(user=user, token_hash="a" * 64, expires_at=now - timedelta(days=8))
    old_job = _job(membership, JobStatus.COMPLETE, finished_hours_ago=30)
    (data_dir / "jobs" / old_job.pk).mkdir(parents=True)
    quiet_job = _job(membership, JobStatus.ERROR, finished_hours_ago=10)
    running = _job(membership, JobStatus.RUNNING, finished_hours_ago=None)

    counted = prune(now=now, job_hours=24, log_hours=6, dry_run=True)
    assert JoinToken.objects.count() == 2, "a dry run deletes nothing"
    deleted = prune(now=now, job_hours=24, log_hours=6)

    assert deleted == counted
    assert deleted["join_tokens"] == 1
    assert deleted["session_tokens"] >= 1
    assert deleted["password_resets"] == 1
    assert deleted["jobs"] == 1
    assert deleted["job_events"] == 2
    assert list(JoinToken.objects.values_list("pk", flat=True)) == [fresh.pk]
    assert not SessionToken.objects.filter(pk=ended.pk).exists()
    assert not Job.objects.filter(pk=old_job.pk).exists()
    assert not (data_dir / "jobs" / old_job.pk).exists()
    assert list(quiet_job.events.values_list("seq", flat=True)) == [3], "the terminal event stays"
    assert running.events.count() == 3
    assert prune(now=now, job_hours=24, log_hours=6) == dict.fromkeys(deleted, 0)


def test_prune_command_reports_counts(membership, data_dir):
    out, _ = run("prune", "--dry-run")
    assert out.startswith("would delete: session_tokens 0, password_resets 0")
    assert "join_tokens 0" in out
    assert "job_events 0, jobs 0" in out
    out, _ = run("prune", "--job-hours", "0", "--log-hours", "0")
    assert "job_events 0, jobs 0" in out


# --- join and runtime_heartbeat against a real server -----------------------------------------


@pytest.fixture
def control_plane(live_server, transactional_db, data_dir) -> tuple[str, Any]:
    issued = user_signup(name="Di", email="di@example.com", password="a long passphrase 1")
    return live_server.url, issued.membership


def test_join_registers_stores_the_credential_and_heart_beats(control_plane, settings):
    url, membership = control_plane
    minted = join_token_issue(actor=actor_of(membership.workspace, name=str(membership.user.pk)))
    out, _ = run("join", "--control-plane", url + "/", "--token", minted.secret,
                 "--name", "box-1", "--region", "eu", "--no-heartbeat")  # fmt: skip

    runtime = Runtime.objects.get()
    assert f"joined {url} as {runtime.pk}" in out
    assert (runtime.name, runtime.kind, runtime.region) == ("box-1", "matrixcloud", "eu")
    assert "mcp.test" in runtime.caps
    assert runtime.resources["free_disk_bytes"] > 0
    path = settings.MATRIX_DATA_DIR / "cloud-runtime.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert stored["runtime_id"] == runtime.pk
    assert stored["control_plane"] == url
    assert stored["runtime_token"] not in out

    out, _ = run("runtime_heartbeat", "--once")
    assert out.split()[0] == runtime.pk
    runtime.refresh_from_db()
    assert runtime.last_seen_at > runtime.created_at

    with pytest.raises(CommandError, match=r"already joined .* pass --force"):
        run("join", "--control-plane", url, "--token", minted.secret)
    with pytest.raises(CommandError, match="join token already used"):
        run("join", "--control-plane", url, "--token", minted.secret, "--force", "--no-heartbeat")
    assert agent.credential_load().runtime_id == runtime.pk, "a refused join keeps the old one"


def test_join_refuses_bad_tokens_and_unreachable_control_planes(control_plane):
    url, _ = control_plane
    with pytest.raises(CommandError, match="invalid join token"):
        run("join", "--control-plane", url, "--token", "mxrt_" + "1" * 64)
    started = time.monotonic()
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CommandError, match=f"could not join {nobody}"):
        run("join", "--control-plane", nobody, "--token", "mxrt_" + "1" * 64)
    assert time.monotonic() - started < agent.HTTP_TIMEOUT
    with pytest.raises(CommandError, match="not an http"):
        run("join", "--control-plane", "file:///etc/passwd", "--token", "x")
    with pytest.raises(CommandError, match="has not joined"):
        run("runtime_heartbeat", "--once")
    assert not Runtime.objects.exists()


def test_the_loop_keeps_going_through_refusals_and_says_offline_on_stop(control_plane):
    url, membership = control_plane
    minted = join_token_issue(actor=actor_of(membership.workspace, name=str(membership.user.pk)))
    credential = agent.join(control_plane=url, join_token=minted.secret, name="loop")
    runtime = Runtime.objects.get()
    said: list[str] = []
    stop = threading.Event()
    loop = threading.Thread(
        target=agent.heartbeat_loop, args=(credential, stop), kwargs={"interval": 0.2,
                                                                      "say": said.append},
    )  # fmt: skip
    loop.start()
    try:
        deadline = time.monotonic() + 20
        while not any("heart-beating" in line for line in said) and time.monotonic() < deadline:
            time.sleep(0.05)
        runtime_token_revoke(runtime=runtime, actor=actor_of())
        while not any("token revoked" in line for line in said) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        loop.join(timeout=agent.HTTP_TIMEOUT + agent.FINAL_BEAT_TIMEOUT)
    assert not loop.is_alive()
    assert any(f"heart-beating to {url} as {runtime.pk}" in line for line in said)
    assert any("runtime token revoked" in line and "retrying in" in line for line in said)
    assert "could not say offline" in said[-1], "a revoked token cannot say offline either"


# --- what a heartbeat reports ------------------------------------------------------------------


@pytest.fixture
def fake_smi(tmp_path, monkeypatch) -> Path:
    """An ``nvidia-smi`` on PATH that answers the query as the real one does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in *--query-gpu=name,memory.total,memory.free*) ;; *) exit 9;; esac\n'
        f"printf '{SMI_OUTPUT.replace(chr(10), chr(92) + 'n')}'\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return script


class _Ollama(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        answers = {
            "/api/version": {"version": "0.5.0"},
            "/api/ps": {"models": [{"name": "qwen2.5:0.5b"}, {"name": "llama3.2:1b"}]},
        }
        body = json.dumps(answers.get(self.path, {})).encode()
        self.send_response(200 if self.path in answers else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def ollama(monkeypatch) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ollama)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MATRIX_RUNTIME_OLLAMA_URL", url)
    clear_cache()
    yield url
    server.shutdown()
    server.server_close()
    clear_cache()


def test_gpus_come_from_nvidia_smi(fake_smi):
    assert agent.gpu_inventory() == [
        {"name": "NVIDIA H200", "memory_mb": 143771, "memory_free_mb": 143197},
        {"name": "NVIDIA L4", "memory_mb": 23034, "memory_free_mb": 22000},
    ]


def test_no_nvidia_smi_means_no_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert agent.gpu_inventory() == []


def test_resources_report_gpus_engines_loaded_models_and_disk(fake_smi, ollama, data_dir):
    resources = agent.resources_collect()
    assert resources["gpu_memory_mb"] == 143771 + 23034
    assert resources["gpu_memory_free_mb"] == 143197 + 22000
    assert len(resources["gpus"]) == 2
    assert "ollama" in resources["engines"]
    assert resources["loaded_models"] == ["llama3.2:1b", "qwen2.5:0.5b"]
    assert resources["free_disk_bytes"] > 0
    assert resources["cpu_count"] >= 1
    assert resources["memory_mb"] > 0
