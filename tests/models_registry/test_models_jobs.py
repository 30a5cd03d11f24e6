"""The model job types run for real, in this process, against servers on loopback.

``model.inspect`` (safetensors headers, size, memory, fit), ``model.pull`` (a real
download into the cache: byte progress, resume after a dropped connection and after a
cancel, checksum mismatch, gated and missing repos), ``model.attach`` in its three
install modes through ``ready`` and its failures (installation and profile ``failed``
with the reason), and ``model.preload`` against a fake Ollama and a fake vLLM.
Jobs run through the real runner (``run_job``: claim, watchdog, finish); tests commit
for real so the watchdog thread sees the rows.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from accounts.models import AuditEvent, UsageEvent, Workspace
from accounts.services.providers import provider_upsert
from jobs.models import Job, JobEvent
from jobs.runner import run_job
from jobs.services import job_cancel, job_enqueue
from models_registry.models import ModelInstallation, ModelProfile
from runtimes.models import Runtime
from tests import factories
from tests.factories import actor_of, bearer
from tests.fake_hub import (
    GATED_TOKEN,
    FakeHub,
    standard_hub,
    tiny_model_files,
    tiny_parameter_count,
)
from tests.fake_openai import FakeOllama, FakeOpenAI
from tests.jobs.test_jobs_worker import wait_for  # also makes the SQLite test database a file

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
TINY = "hf:acme/tiny-llama-1B"
BIG = "hf:acme/big-model-2B"
BIG_FILE = "model-00002.safetensors"


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with standard_hub() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(hub: FakeHub, settings: Any, tmp_path: Path) -> FakeHub:
    """Each test: the fake hub, no token, and its own data dir and model cache."""
    settings.HF_ENDPOINT = hub.url
    settings.HF_TOKEN = ""
    settings.MATRIX_DATA_DIR = tmp_path / "data"
    settings.MATRIX_HF_CACHE_DIR = tmp_path / "data" / "models" / "huggingface"
    hub.cut_once.clear()
    hub.corrupt.clear()
    hub.rate = 0.0
    hub.stall.clear()
    hub.released.clear()
    hub.requests.clear()
    return hub


@pytest.fixture
def owner() -> tuple[Workspace, str]:
    _user, workspace, token = factories.signup("Owen Owner", "owen@models.test", "Models")
    return workspace, token


def run(workspace: Workspace, job_type: str, **payload: Any) -> Any:
    """Create a job and run it here; the finished row."""
    job = job_enqueue(job_type=job_type, payload=payload, ttl_seconds=0, actor=actor_of(workspace))
    run_job(job.pk)
    return Job.objects.get(pk=job.pk)


def events(job: Job, step: str | None = None) -> list[JobEvent]:
    found = JobEvent.objects.filter(job_id=job.pk).order_by("seq")
    return list(found.filter(step=step) if step else found)


def in_background(job_id: str) -> threading.Thread:
    def work() -> None:
        from django import db

        try:
            run_job(job_id)
        finally:
            db.connection.close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


# --- inspect -----------------------------------------------------------------------------
def test_inspect_counts_parameters_from_the_safetensors_headers(owner: Any) -> None:
    workspace, _ = owner
    runtime = Runtime.objects.create(
        workspace=workspace, name="small-gpu", token_hash="a" * 64, resources={"gpu_memory_mb": 1}
    )
    job = run(workspace, "model.inspect", model=TINY, runtime_id=runtime.id)
    assert job.status == "complete", job.error
    result = job.result
    params = tiny_parameter_count()
    size = sum(len(data) for data in tiny_model_files().values() if isinstance(data, bytes))
    assert result["model"] == TINY
    assert result["revision"] == "main"
    assert result["estimated_parameters"] == params
    assert result["parameters_source"] == "safetensors"
    assert result["parameters_by_dtype"] == {"F16": params}
    assert result["dtype"] == "float16"
    assert result["download_size_bytes"] == size
    assert result["files"] == 3
    assert result["memory_bytes"]["float16"] == int(params * 2 * 1.2)
    assert result["memory_bytes"]["float32"] == int(params * 4 * 1.2)
    assert (result["recommended_runtime"], result["requires_gpu"]) == ("ollama", False)
    assert result["fits"] == {
        "runtime_id": runtime.id,
        "dtype": "float16",
        "required_mb": 1,
        "gpu_memory_mb": 1,
        "fits": True,
    }
    assert [(e.step, e.status) for e in events(job)][2:4] == [
        ("resolve", "start"),
        ("inspect", "ok"),
    ]


def test_inspect_of_a_gated_model_estimates_from_its_name_and_says_gated(owner: Any) -> None:
    workspace, _ = owner
    runtime = Runtime.objects.create(
        workspace=workspace, name="gpu", token_hash="b" * 64, resources={"gpu_memory_mb": 8192}
    )
    job = run(workspace, "model.inspect", model="acme/gated-7B", runtime_id=runtime.id)
    result = job.result
    assert result["gated"] is True
    assert "gated" in result["note"]
    assert result["estimated_parameters"] == 7_000_000_000
    assert result["parameters_source"] == "name"
    assert (result["recommended_runtime"], result["requires_gpu"]) == ("vllm", True)
    assert result["fits"]["fits"] is False
    assert result["fits"]["required_mb"] > 8192


def test_inspect_follows_the_revision_and_reports_missing_models(owner: Any) -> None:
    workspace, _ = owner
    dev = run(workspace, "model.inspect", model=TINY + "@dev")
    assert dev.result["revision"] == "dev"
    assert dev.result["estimated_parameters"] == tiny_parameter_count(hidden=32, layers=1)
    missing = run(workspace, "model.inspect", model="hf:acme/none")
    assert missing.status == "error"
    assert "not found" in missing.error
    empty = run(workspace, "model.inspect", model="")
    assert empty.error == "payload.model is required (e.g. hf:Qwen/Qwen2.5-7B-Instruct)"
    gguf = run(workspace, "model.inspect", model="acme/quant-GGUF")
    assert gguf.result["recommended_runtime"] == "ollama"


# --- pull --------------------------------------------------------------------------------
def test_pull_downloads_verifies_and_reports_bytes(owner: Any, settings: Any, hub: FakeHub) -> None:
    workspace, _ = owner
    job = run(workspace, "model.pull", model=BIG)
    assert job.status == "complete", job.error
    result = job.result
    local = Path(result["local_path"])
    files = hub.repos["acme/big-model-2B"].commits[result["commit"]]
    for name, entry in files.items():
        assert (local / name).read_bytes() == entry.data
    assert local.is_relative_to(Path(settings.MATRIX_HF_CACHE_DIR))
    assert (
        result["total_bytes"] == sum(e.size for e in files.values()) == result["downloaded_bytes"]
    )
    progress = [e.data for e in events(job, "download")]
    done = [p["downloaded_bytes"] for p in progress]
    assert done == sorted(done)
    assert done[-1] == result["total_bytes"]
    assert all(p["total_bytes"] == result["total_bytes"] for p in progress)
    assert events(job, "verify")[0].message == "checksums verified for 4 files"
    again = run(workspace, "model.pull", model=BIG)  # all cached: nothing fetched
    assert again.result["downloaded_bytes"] == 0
    assert again.result["local_path"] == str(local)


def test_pull_resumes_a_dropped_connection_with_a_range_request(owner: Any, hub: FakeHub) -> None:
    workspace, _ = owner
    hub.cut_once.add(BIG_FILE)
    job = run(workspace, "model.pull", model=BIG)
    assert job.status == "complete", job.error
    gets = hub.gets_of(BIG_FILE)
    assert len(gets) == 2
    assert "Range" not in gets[0]
    assert gets[1]["Range"].startswith("bytes=")
    assert int(gets[1]["Range"][6:-1]) > 0
    assert job.result["resumed_bytes"] > 0
    entry = hub.repos["acme/big-model-2B"].commits[job.result["commit"]][BIG_FILE]
    assert (Path(job.result["local_path"]) / BIG_FILE).read_bytes() == entry.data


def test_a_checksum_mismatch_fails_the_pull_and_keeps_nothing(
    owner: Any, hub: FakeHub, settings: Any
) -> None:
    workspace, _ = owner
    hub.corrupt.add(BIG_FILE)
    job = run(workspace, "model.pull", model=BIG)
    assert job.status == "error"
    assert f"checksum mismatch for {BIG_FILE}: expected sha256" in job.error
    cache = Path(settings.MATRIX_HF_CACHE_DIR)
    repo = hub.repos["acme/big-model-2B"]
    bad = repo.commits[repo.revisions["main"]][BIG_FILE].sha256
    assert not list(cache.glob(f"**/blobs/{bad}*"))  # a bad copy is never resumed from
    assert not list(cache.glob("**/snapshots/*"))
    assert all(p.stat().st_size > 0 for p in cache.glob("**/*.incomplete"))


def test_pull_of_a_gated_model_needs_a_token_with_access(
    owner: Any, hub: FakeHub, settings: Any
) -> None:
    workspace, _ = owner
    refused = run(workspace, "model.pull", model="hf:acme/gated-7B")
    assert refused.status == "error"
    assert "gated" in refused.error
    settings.HF_TOKEN = GATED_TOKEN
    hub.requests.clear()
    allowed = run(workspace, "model.pull", model="hf:acme/gated-7B")
    assert allowed.status == "complete", allowed.error
    assert all(
        h.get("Authorization") == f"Bearer {GATED_TOKEN}" for h in hub.gets_of("config.json")
    )
    missing = run(workspace, "model.pull", model="hf:acme/none")
    assert missing.status == "error"
    assert "not found" in missing.error


def test_the_workspaces_credential_is_used_and_every_pull_is_metered(
    owner: Any, hub: FakeHub, settings: Any
) -> None:
    workspace, _ = owner
    provider_upsert(provider="huggingface", secret=GATED_TOKEN, actor=actor_of(workspace))
    job = run(workspace, "model.pull", model="hf:acme/gated-7B")
    assert job.status == "complete", job.error  # HF_TOKEN is empty: the credential did it
    assert {h.get("Authorization") for h in hub.gets_of("config.json")} == {f"Bearer {GATED_TOKEN}"}
    assert AuditEvent.objects.filter(
        action="provider.credential.read", workspace=workspace, meta__purpose="model.pull"
    ).exists()
    run(workspace, "model.inspect", model=TINY)
    usage = {(row.kind, row.quantity) for row in UsageEvent.objects.filter(workspace=workspace)}
    assert usage == {("model.pull", job.result["downloaded_bytes"]), ("model.inspect", 1)}
    _other_user, other, _ = factories.signup("Nina Neighbour", "nina@models.test", "Neighbour")
    refused = run(other, "model.pull", model="hf:acme/gated-7B")  # not their credential
    assert refused.status == "error"
    assert "gated" in refused.error


def test_cancel_mid_download_then_a_new_pull_resumes(
    owner: Any, hub: FakeHub, settings: Any
) -> None:
    workspace, _ = owner
    hub.rate = 1_000_000  # about 2 s for the big file
    job = job_enqueue(
        job_type="model.pull", payload={"model": BIG}, ttl_seconds=0, actor=actor_of(workspace)
    )
    thread = in_background(job.pk)

    repo = hub.repos["acme/big-model-2B"]
    big_blob = repo.commits[repo.revisions["main"]][BIG_FILE].sha256

    def midway() -> bool:
        """The big file's partial blob has bytes (the small files finish at once)."""
        for path in Path(settings.MATRIX_HF_CACHE_DIR).glob(f"**/blobs/{big_blob}.incomplete"):
            with contextlib.suppress(FileNotFoundError):  # finished meanwhile
                if path.stat().st_size > 0:
                    return True
        return False

    wait_for(midway, 20, "the download to be under way")
    job_cancel(job=Job.objects.get(pk=job.pk), actor=actor_of())
    thread.join(timeout=20)
    assert not thread.is_alive()
    ended = Job.objects.get(pk=job.pk)
    assert ended.status == "cancelled"
    hub.rate = 0.0
    again = run(workspace, "model.pull", model=BIG)
    assert again.status == "complete", again.error
    assert again.result["resumed_bytes"] > 0
    assert any("Range" in headers for headers in hub.gets_of(BIG_FILE))


# --- attach ------------------------------------------------------------------------------
def attach(api: Any, token: str, profile: dict[str, Any], **body: Any) -> Any:
    """Attach through the API, then run the job here."""
    body.setdefault("runtimeId", "local")
    response = api.post(f"/v1/model-profiles/{profile['id']}/attach", body, **bearer(token))
    assert response.status_code == 202, response.content
    run_job(response.json()["job_id"])
    return Job.objects.get(pk=response.json()["job_id"])


def profile_of(api: Any, token: str, **body: Any) -> dict[str, Any]:
    response = api.post("/v1/model-profiles", body, **bearer(token))
    assert response.status_code == 201
    return dict(response.json()["profile"])


def installation(job: Job) -> ModelInstallation:
    return ModelInstallation.objects.get(job_id=job.pk)


ATTACH_STEPS = ["checking_runtime", "checking_disk", "checking_gpu", "fetching_metadata"]
TAIL_STEPS = ["verifying", "creating_profile", "attached", "ready", "complete"]


def test_attach_pull_from_source_downloads_and_ends_ready(api: Any, owner: Any) -> None:
    _workspace, token = owner
    profile = profile_of(api, token, provider="Hugging Face", external_id="acme/big-model-2B")
    job = attach(api, token, profile, servingEngine="vLLM")
    assert job.status == "complete", job.error
    steps = [e.step for e in events(job)][2:]
    assert steps[:4] == ATTACH_STEPS
    assert steps[-5:] == TAIL_STEPS
    downloading = [e.data for e in events(job, "downloading")]
    percents = [d["progress"] for d in downloading]
    assert percents == sorted(percents)
    assert percents[-1] == 100
    assert len(percents) >= 2
    row = installation(job)
    assert (row.status, row.progress, row.error) == ("ready", 100, "")
    assert (Path(row.local_path) / BIG_FILE).is_file()
    assert ModelProfile.objects.get(pk=profile["id"]).status == "ready"
    serving = json.loads(Path(job.result["serving_profile"]).read_text())
    assert serving["command"].startswith("vllm serve ")
    assert row.local_path in serving["command"]
    listed = api.get("/v1/model-installations", **bearer(token)).json()["installations"][0]
    assert (listed["status"], listed["progress"], listed["local_path"]) == (
        "ready",
        100,
        row.local_path,
    )


def test_attach_mount_volume_checks_the_folder(
    api: Any, owner: Any, tmp_path: Path, settings: Any
) -> None:
    _workspace, token = owner
    settings.MATRIX_MODEL_ROOTS = [tmp_path / "volume"]
    folder = tmp_path / "volume" / "tiny"
    folder.mkdir(parents=True)
    for name, data in tiny_model_files().items():
        (folder / name).write_bytes(data)  # type: ignore[arg-type]
    profile = profile_of(
        api, token, source_type="volume", source_uri=str(folder), external_id="tiny"
    )
    job = attach(api, token, profile, installMode="mount_volume", servingEngine="SGLang")
    assert job.status == "complete", job.error
    assert "checking_mount" in [e.step for e in events(job)]
    row = installation(job)
    assert (row.status, row.local_path) == ("ready", str(folder))
    assert (
        "sglang.launch_server"
        in json.loads(Path(job.result["serving_profile"]).read_text())["command"]
    )

    empty = tmp_path / "volume" / "empty"
    empty.mkdir()
    bad = profile_of(api, token, source_type="volume", source_uri=str(empty), external_id="none")
    failed = attach(api, token, bad, installMode="mount_volume")
    assert failed.status == "error"
    assert "holds no model weights" in failed.error
    row = installation(failed)
    assert row.status == "failed"
    assert "holds no model weights" in row.error
    assert ModelProfile.objects.get(pk=bad["id"]).status == "failed"


def test_attach_external_endpoint_probes_and_sets_the_url(api: Any, owner: Any) -> None:
    _workspace, token = owner
    with FakeOpenAI(["acme/tiny-llama-1B"]) as server:
        profile = profile_of(api, token, provider="Hugging Face", external_id="acme/tiny-llama-1B")
        job = attach(api, token, profile, installMode="external_endpoint", endpointUrl=server.url)
        assert job.status == "complete", job.error
        row = installation(job)
        assert (row.status, row.endpoint_url) == ("ready", server.url + "/v1")
        assert ("GET", "/v1/models", None) in server.requests
        other = profile_of(api, token, source_type="url", source_uri=server.url, external_id="x/y")
        failed = attach(api, token, other, installMode="external_endpoint")
    assert failed.status == "error"
    assert "does not serve x/y" in failed.error
    assert installation(failed).status == "failed"
    assert ModelProfile.objects.get(pk=other["id"]).error == failed.error


def test_attach_failures_mark_installation_and_profile_failed(api: Any, owner: Any) -> None:
    workspace, token = owner
    missing = profile_of(api, token, provider="Hugging Face", external_id="acme/none")
    job = attach(api, token, missing)
    assert job.status == "error"
    assert "not found" in job.error
    row = installation(job)
    assert (row.status, row.error) == ("failed", job.error)
    assert ModelProfile.objects.get(pk=missing["id"]).status == "failed"

    offline = Runtime.objects.create(
        workspace=workspace, name="gone", token_hash="c" * 64, status="offline"
    )
    tiny = profile_of(api, token, provider="Hugging Face", external_id="acme/tiny-llama-1B")
    job = attach(api, token, tiny, runtimeId=offline.id)
    assert job.error == f"runtime {offline.id} is offline"
    assert installation(job).status == "failed"


def test_a_runtime_short_of_disk_fails_the_attach_before_downloading(
    api: Any, owner: Any, hub: FakeHub
) -> None:
    workspace, token = owner
    runtime = Runtime.objects.create(
        workspace=workspace,
        name="tiny-disk",
        token_hash="d" * 64,
        resources={"free_disk_bytes": 1000, "gpu_memory_mb": 24576},
    )
    profile = profile_of(api, token, provider="Hugging Face", external_id="acme/big-model-2B")
    job = attach(api, token, profile, runtimeId=runtime.id)
    assert job.status == "error"
    assert job.error.startswith("not enough free disk: ")
    assert ("checking_disk", "error") in [(e.step, e.status) for e in events(job)]
    assert installation(job).status == "failed"
    # only the safetensors header was read (a Range GET), never the weights
    assert all(h.get("Range", "").startswith("bytes=0-") for h in hub.gets_of(BIG_FILE))

    roomy = Runtime.objects.create(
        workspace=workspace,
        name="gpu-box",
        token_hash="9" * 64,
        resources={"free_disk_bytes": 10**12, "gpu_memory_mb": 24576},
    )
    tiny = profile_of(api, token, provider="Hugging Face", external_id="acme/tiny-llama-1B")
    done = attach(api, token, tiny, runtimeId=roomy.id)
    assert done.status == "complete", done.error
    gpu = events(done, "checking_gpu")[0]
    assert gpu.message.endswith("runtime has 24576 MB: fits (advisory)")
    assert gpu.data["fits"] is True


def test_an_attach_that_expires_mid_download_fails_the_installation(
    api: Any, owner: Any, hub: FakeHub
) -> None:
    """A model job is timed by its progress: the download stops sending bytes half way
    (the connection stays open), and the job expires after its window without progress."""
    _, token = owner
    hub.stall.add(BIG_FILE)
    profile = profile_of(api, token, provider="Hugging Face", external_id="acme/big-model-2B")
    body = api.post(
        f"/v1/model-profiles/{profile['id']}/attach", {"runtimeId": "local"}, **bearer(token)
    ).json()
    Job.objects.filter(pk=body["job_id"]).update(ttl_seconds=2)  # 2 s without progress
    try:
        run_job(body["job_id"])
    finally:
        hub.released.set()
    job = Job.objects.get(pk=body["job_id"])
    assert job.status == "expired"
    assert events(job)[-1].message == "Job expired: no progress for 2 seconds"
    row = ModelInstallation.objects.get(pk=body["installation_id"])
    assert (row.status, row.error) == ("failed", "the model.attach job was expired")
    assert ModelProfile.objects.get(pk=profile["id"]).status == "failed"


def test_an_attach_job_cannot_touch_another_workspaces_installation(api: Any, owner: Any) -> None:
    _, token = owner
    profile = profile_of(api, token, provider="Hugging Face", external_id="acme/tiny-llama-1B")
    body = api.post(
        f"/v1/model-profiles/{profile['id']}/attach", {"runtimeId": "local"}, **bearer(token)
    ).json()
    *_, other_token = factories.signup("Nina Neighbour", "nina@models.test", "Neighbour")
    payload = {"installation_id": body["installation_id"], "runtime_id": "local", "model": TINY}
    created = api.post(
        "/v1/jobs", {"type": "model.attach", "payload": payload}, **bearer(other_token)
    )
    assert created.status_code == 202
    run_job(created.json()["job_id"])
    job = Job.objects.get(pk=created.json()["job_id"])
    assert (job.status, job.error) == ("error", f"installation {body['installation_id']} not found")
    row = ModelInstallation.objects.get(pk=body["installation_id"])
    assert (row.status, row.progress, row.error) == ("queued", 0, "")


def test_cancelling_an_attach_mid_download_fails_the_installation(
    api: Any, owner: Any, hub: FakeHub
) -> None:
    _workspace, token = owner
    hub.rate = 1_000_000
    profile = profile_of(api, token, provider="Hugging Face", external_id="acme/big-model-2B")
    response = api.post(
        f"/v1/model-profiles/{profile['id']}/attach", {"runtimeId": "local"}, **bearer(token)
    )
    job_id = response.json()["job_id"]
    thread = in_background(job_id)
    row = ModelInstallation.objects.get(job_id=job_id)

    def downloading() -> bool:
        now = ModelInstallation.objects.get(pk=row.pk)
        return now.status == "downloading" and 0 < now.progress < 100

    wait_for(downloading, 20, "the download to be under way")
    cancelled = api.delete(f"/v1/jobs/{job_id}", **bearer(token))
    assert cancelled.status_code == 200
    thread.join(timeout=20)
    assert Job.objects.get(pk=job_id).status == "cancelled"
    row.refresh_from_db()
    assert (row.status, row.error) == ("failed", "the model.attach job was cancelled")
    assert 0 < row.progress < 100
    assert ModelProfile.objects.get(pk=profile["id"]).status == "failed"


# --- preload -----------------------------------------------------------------------------
def test_preload_asks_ollama_or_an_openai_compatible_engine(
    owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace, _ = owner
    with FakeOllama(["tiny:latest"]) as ollama, FakeOpenAI(["acme/tiny-llama-1B"]) as vllm:
        monkeypatch.setenv("MATRIX_RUNTIME_OLLAMA_URL", ollama.url)
        loaded = run(workspace, "model.preload", model="tiny:latest")
        assert loaded.status == "complete", loaded.error
        assert loaded.result["engine"] == "ollama"
        assert ollama.loaded == ["tiny:latest"]
        warm = run(workspace, "model.preload", model=TINY, engine="vLLM", endpoint_url=vllm.url)
        assert warm.status == "complete", warm.error
        assert warm.result["served_model"] == "acme/tiny-llama-1B"
        assert any(path == "/v1/chat/completions" for _, path, _ in vllm.requests)
        absent = run(
            workspace, "model.preload", model="acme/other", engine="vllm", endpoint_url=vllm.url
        )
        assert absent.status == "error"
        assert "does not serve acme/other" in absent.error


def test_preload_without_an_engine_says_so(owner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace, _ = owner
    with FakeOllama([]) as closed:
        url = closed.url
    monkeypatch.setenv("MATRIX_RUNTIME_OLLAMA_URL", url)  # nothing listens there now
    monkeypatch.delenv("MATRIX_RUNTIME_VLLM_URL", raising=False)
    monkeypatch.delenv("MATRIX_RUNTIME_SGLANG_URL", raising=False)
    job = run(workspace, "model.preload", model="tiny")
    assert job.status == "error"
    assert job.error.startswith("no serving engine is running to preload tiny")
    assert f"ollama at {url}" in job.error


def test_attach_mount_volume_outside_the_roots_is_refused_alike(
    api: Any, owner: Any, tmp_path: Path, settings: Any
) -> None:
    """The attack: mount /etc, a path that does not exist, a symlink inside the root that
    points out, and ``<root>/../x``: one refusal, the same words, no existence oracle."""
    _workspace, token = owner
    root = tmp_path / "models"
    root.mkdir()
    settings.MATRIX_MODEL_ROOTS = [root]
    outside = tmp_path / "outside"
    outside.mkdir()
    for name, data in tiny_model_files().items():
        (outside / name).write_bytes(data)  # type: ignore[arg-type]
    (root / "escape").symlink_to(outside)
    tried = ["/etc", str(tmp_path / "no-such-dir"), str(root / "escape"), f"{root}/../outside"]
    errors = []
    for n, path in enumerate(tried):
        bad = profile_of(api, token, source_type="volume", source_uri=path, external_id=f"x{n}")
        failed = attach(api, token, bad, installMode="mount_volume")
        assert failed.status == "error"
        errors.append(failed.error.replace(repr(path), "<path>"))
    assert errors == ["mount path <path> is outside the allowed roots"] * len(tried)
