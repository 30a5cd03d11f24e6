"""Model sources, profiles and installations over the API (no job run here: those are in
``test_models_jobs``), against the fake Hugging Face server on loopback.

Search is live and sorted by downloads, and a hub failure is a 200 that says so;
resolve honours the branch and never doubles ``hf:``; profiles are imported (audited),
listed newest first and workspace-scoped; attach checks the runtime, writes the
installation and a ``model.attach`` job; another workspace's profile or runtime is 404.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from importlib import import_module
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.utils import timezone

from accounts.models import AuditEvent
from jobs.janitor import janitor_sweep
from jobs.models import Job
from jobs.services import job_cancel
from models_registry.models import ModelInstallation, ModelProfile
from runtimes.models import Runtime
from tests import factories
from tests.factories import actor_of, bearer, error, issue
from tests.fake_hub import FakeHub, standard_hub

fail_unsettled = import_module(
    "models_registry.migrations.0002_fail_installations_of_ended_jobs"
).fail_unsettled

pytestmark = pytest.mark.django_db
cast = factories.cast


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with standard_hub() as running:
        yield running


@pytest.fixture(autouse=True)
def hub_endpoint(hub: FakeHub, settings: Any) -> FakeHub:
    settings.HF_ENDPOINT = hub.url
    settings.HF_TOKEN = ""
    hub.fail_search = False
    return hub


def auth(cast: Any, who: str = "member") -> dict[str, str]:
    return bearer(issue(getattr(cast, who)))


def imported(api: Any, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = api.post("/v1/model-profiles", body, **headers)
    assert response.status_code == 201, response.content
    return dict(response.json()["profile"])


# --- search ------------------------------------------------------------------------------
def test_search_is_live_and_sorted_by_downloads(api: Any, hub: FakeHub) -> None:
    body = api.get("/v1/model-sources/huggingface/search", {"q": "acme"}).json()
    assert body["live"] is True
    downloads = [item["downloads"] for item in body["items"]]
    assert downloads == sorted(downloads, reverse=True)
    assert len(downloads) == 5
    assert body["items"][0]["id"] == "acme/encoder-350m"
    gated = next(item for item in body["items"] if item["id"] == "acme/gated-7B")
    assert gated["gated"] is True
    sent = [p for m, p, _ in hub.requests if p == "/api/models"]
    assert sent, "the search went to the hub"


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ({"q": "acme", "task": "feature-extraction"}, ["acme/encoder-350m"]),
        ({"q": "acme", "task": "any", "limit": "2"}, ["acme/encoder-350m", "acme/tiny-llama-1B"]),
        ({"q": "tiny", "limit": "500"}, ["acme/tiny-llama-1B"]),  # > 50: the default
        ({"q": "quant", "limit": "x"}, ["acme/quant-GGUF"]),  # unparsable: ignored
    ],
)
def test_search_filters_by_task_and_limits(api: Any, query: dict[str, str], ids: list[str]) -> None:
    body = api.get("/v1/model-sources/huggingface/search", query).json()
    assert [item["id"] for item in body["items"]] == ids


def test_a_failing_hub_is_a_200_that_is_not_live(api: Any, hub: FakeHub) -> None:
    hub.fail_search = True
    response = api.get("/v1/model-sources/huggingface/search", {"q": "acme"})
    assert response.status_code == 200
    body = response.json()
    assert body["items"] == []
    assert body["live"] is False
    assert "500" in body["error"]


# --- resolve -----------------------------------------------------------------------------
def test_resolve_a_hugging_face_model_at_a_branch(api: Any, cast: Any, hub: FakeHub) -> None:
    headers = auth(cast)
    main = api.post("/v1/model-sources/resolve", {"model": "hf:acme/tiny-llama-1B"}, **headers)
    dev = api.post(
        "/v1/model-sources/resolve",
        {"sourceType": "huggingface", "externalId": "hf:acme/tiny-llama-1B", "branch": "dev"},
        **headers,
    )
    assert main.status_code == dev.status_code == 200
    a, b = main.json(), dev.json()
    assert a["source_uri"] == "hf:acme/tiny-llama-1B"  # one hf:, never hf:hf:
    assert b["source_uri"] == "hf:acme/tiny-llama-1B@dev"
    assert a["external_id"] == b["external_id"] == "acme/tiny-llama-1B"
    assert a["commit"] == hub.repos["acme/tiny-llama-1B"].revisions["main"]
    assert b["commit"] == hub.repos["acme/tiny-llama-1B"].revisions["dev"] != a["commit"]
    assert (a["provider"], a["task"], a["license"]) == (
        "Hugging Face",
        "text-generation",
        "apache-2.0",
    )
    assert a["recommended_runtime"] == "ollama"
    assert a["requires_gpu"] is False


def test_resolve_failures_are_502_with_the_reason(api: Any, cast: Any) -> None:
    headers = auth(cast)
    missing = api.post("/v1/model-sources/resolve", {"model": "hf:acme/none"}, **headers)
    assert missing.status_code == 502
    assert missing.json()["error"].startswith("could not resolve model: ")
    assert "not found" in missing.json()["error"]
    branch = api.post(
        "/v1/model-sources/resolve",
        {"model": "hf:acme/tiny-llama-1B", "branch": "nope"},
        **headers,
    )
    assert branch.json() == error(
        'could not resolve model: model "acme/tiny-llama-1B" not found at revision "nope"', 502
    )
    bad = api.post("/v1/model-sources/resolve", {"model": "hf:no-slash"}, **headers)
    assert bad.status_code == 502
    assert "want namespace/name" in bad.json()["error"]


def test_resolve_other_sources_previews_without_contacting_anything(api: Any, cast: Any) -> None:
    body = {
        "sourceType": "s3",
        "sourceUri": "s3://bucket/models/",
        "path": "/llama",
        "provider": "S3",
    }
    answer = api.post("/v1/model-sources/resolve", body, **auth(cast)).json()
    assert answer["source_uri"] == "s3://bucket/models/llama"
    assert answer["library"] == "custom"
    assert answer["license"] == "review required"


# --- profiles ----------------------------------------------------------------------------
def test_import_list_and_audit(api: Any, cast: Any) -> None:
    headers = auth(cast)
    first = imported(
        api,
        headers,
        source_type="huggingface",
        provider="Hugging Face",
        external_id="hf:acme/tiny-llama-1B",
        source_uri="hf:acme/tiny-llama-1B",
        tags=["llama"],
        metadata={"note": "x"},
    )
    second = imported(api, headers, source_type="url", source_uri="http://x", external_id="x")
    assert first["id"].startswith("mp_")
    assert first["status"] == "profile_only"
    assert first["external_id"] == first["display_name"] == "acme/tiny-llama-1B"
    assert first["tags"] == ["llama"]
    assert first["metadata"] == {"note": "x"}
    assert second["tags"] is None
    assert second["metadata"] is None
    listed = api.get("/v1/model-profiles", **headers).json()["profiles"]
    assert [p["id"] for p in listed] == [second["id"], first["id"]]
    other = api.get("/v1/model-profiles", **bearer(issue(cast.outsider))).json()["profiles"]
    assert other == []
    audit = AuditEvent.objects.filter(action="model.imported", target="acme/tiny-llama-1B").get()
    assert audit.actor == cast.member.pk
    assert audit.meta["external_id"] == "acme/tiny-llama-1B"


def test_profiles_need_authentication_and_json(api: Any, settings: Any) -> None:
    settings.MATRIX_API_TOKEN = "operator-token-for-model-tests-0123456789"
    assert api.get("/v1/model-profiles").status_code == 401
    assert api.get("/v1/model-installations").status_code == 401
    assert api.post("/v1/model-profiles/mp_x/attach", {"runtimeId": "x"}).status_code == 401


def test_wrong_methods_are_405(api: Any, cast: Any) -> None:
    headers = auth(cast)
    assert api.delete("/v1/model-profiles", **headers).status_code == 405
    assert api.get("/v1/model-profiles/mp_x/attach", **headers).status_code == 405
    assert api.post("/v1/model-installations", {}, **headers).status_code == 405


# --- attach ------------------------------------------------------------------------------
def test_attach_writes_the_installation_and_the_job(api: Any, cast: Any, settings: Any) -> None:
    headers = auth(cast)
    profile = imported(api, headers, provider="Hugging Face", external_id="acme/tiny-llama-1B")
    response = api.post(
        f"/v1/model-profiles/{profile['id']}/attach",
        {"runtimeId": settings.MATRIX_RUNTIME_ID, "servingEngine": "vLLM"},
        **headers,
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["events_url"] == f"/v1/jobs/{body['job_id']}/events"
    job = Job.objects.get(pk=body["job_id"])
    assert job.type == "model.attach"
    assert job.workspace == cast.workspace
    assert job.payload["model"] == "hf:acme/tiny-llama-1B"
    assert job.payload["install_mode"] == "pull_from_source"
    installation = ModelInstallation.objects.get(pk=body["installation_id"])
    assert (installation.status, installation.progress, installation.job_id) == (
        "queued",
        0,
        job.pk,
    )
    assert ModelProfile.objects.get(pk=profile["id"]).status == "queued"
    assert AuditEvent.objects.filter(action="model.attached", meta__job_id=job.pk).exists()
    listed = api.get("/v1/model-installations", **headers).json()["installations"]
    assert listed[0]["id"] == installation.id
    assert listed[0]["model_name"] == "acme/tiny-llama-1B"
    assert listed[0]["provider"] == "Hugging Face"
    assert listed[0]["serving_engine"] == "vLLM"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, "runtimeId"),
        ({"runtimeId": ""}, 400, "runtimeId"),
        ({"runtimeId": "rt_nope"}, 404, "runtime rt_nope not found"),
        ({"runtimeId": "local", "installMode": "teleport"}, 400, "installMode"),
    ],
)
def test_attach_refuses_bad_input(
    api: Any, cast: Any, body: dict[str, Any], status: int, message: str
) -> None:
    headers = auth(cast)
    profile = imported(api, headers, provider="Hugging Face", external_id="acme/tiny-llama-1B")
    response = api.post(f"/v1/model-profiles/{profile['id']}/attach", body, **headers)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert not ModelInstallation.objects.exists()


def test_another_workspaces_profile_and_runtime_are_404(api: Any, cast: Any) -> None:
    mine = imported(api, auth(cast), provider="Hugging Face", external_id="acme/tiny-llama-1B")
    theirs_headers = bearer(issue(cast.outsider))
    response = api.post(
        f"/v1/model-profiles/{mine['id']}/attach", {"runtimeId": "local"}, **theirs_headers
    )
    assert response.json() == error("model profile not found", 404)
    foreign = Runtime.objects.create(
        workspace=cast.other_workspace, name="gpu-box", token_hash="f" * 64
    )
    response = api.post(
        f"/v1/model-profiles/{mine['id']}/attach", {"runtimeId": foreign.id}, **auth(cast)
    )
    assert response.status_code == 404
    assert not ModelInstallation.objects.exists()
    assert ModelProfile.objects.get(pk=mine["id"]).status == "profile_only"


def test_attach_to_a_registered_runtime_of_the_workspace(api: Any, cast: Any) -> None:
    runtime = Runtime.objects.create(
        workspace=cast.workspace,
        name="gpu-box",
        token_hash="e" * 64,
        resources={"gpu_memory_mb": 81920},
    )
    profile = imported(api, auth(cast), provider="Hugging Face", external_id="acme/tiny-llama-1B")
    response = api.post(
        f"/v1/model-profiles/{profile['id']}/attach", {"runtimeId": runtime.id}, **auth(cast)
    )
    assert response.status_code == 202
    assert Job.objects.get(pk=response.json()["job_id"]).payload["runtime_id"] == runtime.id


def queued_attach(
    api: Any, headers: dict[str, str], model: str = "acme/tiny-llama-1B"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Import ``model`` and ask to attach it locally; no worker runs, so its job waits."""
    profile = imported(api, headers, provider="Hugging Face", external_id=model)
    url = f"/v1/model-profiles/{profile['id']}/attach"
    return profile, api.post(url, {"runtimeId": "local"}, **headers).json()


def test_an_attach_cancelled_while_queued_fails_its_installation(api: Any, cast: Any) -> None:
    headers = auth(cast)
    _, body = queued_attach(api, headers)
    job_cancel(job=Job.objects.get(pk=body["job_id"]), actor=actor_of())
    # Settled by the cancel itself, not by a later read of the list.
    row = ModelInstallation.objects.get(pk=body["installation_id"])
    assert (row.status, row.error) == ("failed", "the model.attach job ended cancelled")
    listed = api.get("/v1/model-installations", **headers).json()["installations"]
    assert listed[0]["status"] == "failed"
    assert listed[0]["error"] == "the model.attach job ended cancelled"
    profile_now = api.get("/v1/model-profiles", **headers).json()["profiles"][0]
    assert profile_now["status"] == "failed"
    assert "cancelled" in profile_now["error"]


def test_an_attach_that_expired_while_queued_fails_its_installation(api: Any, cast: Any) -> None:
    headers = auth(cast)
    profile, body = queued_attach(api, headers)
    late = timezone.now() - timedelta(minutes=5)
    Job.objects.filter(pk=body["job_id"]).update(created_at=late, expires_at=late)
    janitor_sweep()
    assert Job.objects.get(pk=body["job_id"]).status == "expired"
    row = ModelInstallation.objects.get(pk=body["installation_id"])
    assert (row.status, row.error) == ("failed", "the model.attach job ended expired")
    assert ModelProfile.objects.get(pk=profile["id"]).status == "failed"


def test_the_upgrade_settles_installations_an_older_release_left_active(
    api: Any, cast: Any
) -> None:
    """Before, the list settled them when read; migration 0002 settles them once."""
    headers = auth(cast)
    (_, ended), (_, running) = (
        queued_attach(api, headers, name) for name in ("acme/tiny-llama-1B", "acme/other-1B")
    )
    Job.objects.filter(pk=ended["job_id"]).update(status="error", error="the worker vanished")
    ModelInstallation.objects.update(status="downloading", error="")  # as an old release left it
    fail_unsettled(django_apps, None)
    row = ModelInstallation.objects.get(pk=ended["installation_id"])
    assert (row.status, row.error) == ("failed", "the worker vanished")
    assert row.profile is not None
    assert row.profile.status == "failed"
    assert ModelInstallation.objects.get(pk=running["installation_id"]).status == "downloading"


# --- the fake hub itself -------------------------------------------------------------------
def test_huggingface_hubs_own_calls_work_against_the_fake(hub: FakeHub, tmp_path: Any) -> None:
    """The fake is faithful enough for ``huggingface_hub`` itself: snapshots, single files,
    paths-info, and the errors it maps (EntryNotFound, RevisionNotFound, GatedRepo)."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        RemoteEntryNotFoundError,
        RevisionNotFoundError,
    )

    repo = hub.repos["acme/tiny-llama-1B"]
    folder = snapshot_download(
        "acme/tiny-llama-1B", revision="dev", cache_dir=tmp_path, endpoint=hub.url, token=False
    )
    files = repo.commits[repo.revisions["dev"]]
    for name, entry in files.items():
        assert (tmp_path / folder / name).read_bytes() == entry.data
    api = HfApi(endpoint=hub.url, token=False)
    infos = api.get_paths_info("acme/tiny-llama-1B", ["model.safetensors", "config.json"])
    by_path = {info.path: info for info in infos}
    main = repo.commits[repo.revisions["main"]]
    assert by_path["model.safetensors"].lfs.sha256 == main["model.safetensors"].sha256
    assert by_path["config.json"].blob_id == main["config.json"].blob_id
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("acme/tiny-llama-1B", "nope.bin", cache_dir=tmp_path, endpoint=hub.url)
    with pytest.raises(RevisionNotFoundError):
        api.model_info("acme/tiny-llama-1B", revision="nope")
    with pytest.raises(GatedRepoError):
        hf_hub_download(
            "acme/gated-7B", "config.json", cache_dir=tmp_path, endpoint=hub.url, token=False
        )


def test_lists_cost_the_same_queries_for_one_row_or_ten(api: Any, cast: Any) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    headers = auth(cast)

    def cost(path: str) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert api.get(path, **headers).status_code == 200
        return len(queries)

    profile = imported(api, headers, provider="Hugging Face", external_id="acme/tiny-llama-1B")
    api.post(f"/v1/model-profiles/{profile['id']}/attach", {"runtimeId": "local"}, **headers)
    one = (cost("/v1/model-profiles"), cost("/v1/model-installations"))
    for _ in range(9):
        api.post(f"/v1/model-profiles/{profile['id']}/attach", {"runtimeId": "local"}, **headers)
    assert (cost("/v1/model-profiles"), cost("/v1/model-installations")) == one
