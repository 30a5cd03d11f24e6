"""The original Python client's ``inspect_model`` and its CLI's ``mxc inspect`` over real
HTTP: a daphne and a ``manage.py worker`` on the test database, both pointed at the fake
Hugging Face server by ``HF_ENDPOINT`` (docs/COMPATIBILITY.md#c-15).

``inspect_model`` is ``run_job("model.inspect", {"model", "revision"})``: create, poll
the snapshot every 0.5 s until a terminal status, return ``result`` (or raise
``MatrixCloudError`` with the job's error). ``mxc inspect`` prints the fields it knows
when present.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fake_hub import FakeHub, standard_hub, tiny_parameter_count
from tests.jobs.test_jobs_worker import REPO, Worker, worker_env
from tests.jobs.test_sse import Server, start_daphne
from tests.system.test_client_compat import MatrixCloudError, OriginalClient

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CLI_FIELDS = (
    "model",
    "pipeline_tag",
    "library_name",
    "model_type",
    "license",
    "estimated_parameters",
    "recommended_runtime",
    "requires_gpu",
)
TERMINAL = ("complete", "error", "expired", "cancelled")


class ModelClient(OriginalClient):
    """The original client's job methods, polling as it does."""

    def run_job(
        self, job_type: str, payload: Any = None, timeout: float = 60.0, poll: float = 0.5
    ) -> Any:
        body: dict[str, Any] = {"type": job_type}
        if payload is not None:
            body["payload"] = payload
        job_id = self._request("POST", "/v1/jobs", body)["job_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = self._request("GET", f"/v1/jobs/{job_id}")
            if snap["status"] in TERMINAL:
                if snap["status"] != "complete":
                    raise MatrixCloudError(snap.get("error") or snap["status"], data=snap)
                return snap.get("result")
            time.sleep(poll)
        raise MatrixCloudError(f"job {job_id} timed out after {timeout}s")

    def inspect_model(self, model: str, revision: str = "main") -> Any:
        return self.run_job("model.inspect", {"model": model, "revision": revision})


def cli_inspect(client: ModelClient, model: str, revision: str = "main") -> list[str]:
    """``mxc inspect MODEL``: the known fields, or ``✗ <message>``."""
    try:
        meta = client.inspect_model(model, revision)
    except MatrixCloudError as exc:
        return [f"✗ {exc}"]
    return [f"{key}: {meta[key]}" for key in CLI_FIELDS if key in meta]


@pytest.fixture(scope="module")
def live(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, FakeHub]]:
    """The fake hub, a local-dev daphne and a worker, the last two on this database."""
    with standard_hub() as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "", "MATRIX_RUNTIME_RATE_LIMIT_RPM": "0"}
        database = {
            k: v for k, v in worker_env().items() if k in ("MATRIX_RUNTIME_DB_PATH", "DATABASE_URL")
        }
        server = start_daphne({**database, **env})
        log = tmp_path_factory.mktemp("models-worker") / "worker.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "worker"],
                cwd=REPO,
                env={**worker_env(), **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(proc, Path(log))
        try:
            server.wait_ready()
            worker.ready()
            yield server, hub
        finally:
            worker.stop()
            server.stop()


def client_for(server: Server) -> ModelClient:
    client = ModelClient(f"http://127.0.0.1:{server.port}")
    client.signup("Ivy Inspector", f"ivy-{time.monotonic_ns()}@models.test", "violet harbour 42")
    return client


def test_the_original_clients_inspect_model(live: tuple[Server, FakeHub]) -> None:
    server, hub = live
    client = client_for(server)
    meta = client.inspect_model("hf:acme/tiny-llama-1B")
    assert meta["model"] == "hf:acme/tiny-llama-1B"
    assert meta["estimated_parameters"] == tiny_parameter_count()
    assert meta["recommended_runtime"] == "ollama"
    assert meta["requires_gpu"] is False
    assert any(path.startswith("/api/models/acme/tiny-llama-1B") for _, path, _ in hub.requests)
    jobs = client._request("GET", "/v1/jobs")["jobs"]
    assert [job["type"] for job in jobs] == ["model.inspect"]
    with pytest.raises(MatrixCloudError) as missing:
        client.inspect_model("hf:acme/none")
    assert 'model "acme/none" not found' in str(missing.value)


def test_mxc_inspect_prints_the_fields(live: tuple[Server, FakeHub]) -> None:
    server, _ = live
    client = client_for(server)
    printed = cli_inspect(client, "acme/encoder-350m")
    assert printed == [
        "model: hf:acme/encoder-350m",
        "pipeline_tag: feature-extraction",
        "library_name: sentence-transformers",
        "model_type: bert",
        "license: apache-2.0",
        f"estimated_parameters: {tiny_parameter_count(hidden=16, layers=1)}",
        "recommended_runtime: ollama",
        "requires_gpu: False",
    ]
    assert cli_inspect(client, "acme/tiny-llama-1B", "dev")[5] == (
        f"estimated_parameters: {tiny_parameter_count(hidden=32, layers=1)}"
    )
    assert cli_inspect(client, "bad-id") == ['✗ invalid model id "bad-id" (want namespace/name)']
