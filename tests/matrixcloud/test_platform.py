"""Platform endpoints: health, version, ready, capabilities, runtimes, catalog, policies,
storage; the gate in front of them; Django admin for users and heartbeats."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from jobs.heartbeats import process_heartbeat_beat, process_heartbeat_stop
from jobs.models import ProcessHeartbeat
from jobs.registry import registered_types
from matrixcloud.platform import storage
from models_registry.catalog import CatalogInvalid, load_catalog
from runtimes import detection
from runtimes.selectors import ago
from sandbox.isolation import isolation_tier
from sandbox.policy import policies_describe, sandbox_limits

pytestmark = pytest.mark.django_db

TOKEN = "operator-token-for-tests-0123456789"
OPEN_PATHS = ("/v1/health", "/v1/version", "/v1/ready", "/v1/capabilities")
GATED_PATHS = ("/v1/runtimes", "/v1/catalog", "/v1/policies", "/v1/system/storage")
ORIGINAL_CATALOG = {
    "mcp_server:filesystem": ("FS", "Node / stdio", "stdio", False, "Disabled", True,
                              "npx -y @modelcontextprotocol/server-filesystem /tmp"),
    "mcp_server:everything": ("EV", "Node / stdio", "stdio", False, "Disabled", True,
                              "npx -y @modelcontextprotocol/server-everything"),
    "mcp_server:git": ("GT", "Python / stdio", "stdio", False, "Disabled", True,
                       "uvx mcp-server-git --repository /tmp"),
    "mcp_server:github": ("GH", "Node / stdio", "stdio", True, "Allowlist", True,
                          "npx -y @modelcontextprotocol/server-github"),
    "model:qwen2.5-7b": ("QW", "vLLM / GPU", None, False, "Disabled", False, None),
    "model:deepseek-v3": ("DS", "vLLM / SGLang", None, False, "Disabled", False, None),
}  # fmt: skip


@pytest.fixture(autouse=True)
def _fresh_detection() -> Iterator[None]:
    detection.clear_cache()
    yield
    detection.clear_cache()


@pytest.fixture
def production(settings: object) -> None:
    """A production mode with an operator token set."""
    settings.MATRIX_MODE = "customer-agent"  # type: ignore[attr-defined]
    settings.MATRIX_PRODUCTION = True  # type: ignore[attr-defined]
    settings.MATRIX_API_TOKEN = TOKEN  # type: ignore[attr-defined]


@pytest.fixture
def live_processes() -> None:
    """A worker and a sandbox host that have just beaten, as the real processes do."""
    process_heartbeat_beat(instance="worker-test-1", role="worker")
    process_heartbeat_beat(instance="host-test-1", role="sandbox_host")


def closed_port() -> int:
    """A loopback port nobody listens on (bound by the kernel, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


# --- health and version -------------------------------------------------------------


def test_health_body(api):
    response = api.get("/v1/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "runtime_id": django_settings.MATRIX_RUNTIME_ID,
        "mode": "local-dev",
        "version": django_settings.VERSION,
    }


def test_version_body(api, monkeypatch):
    monkeypatch.delenv("MATRIX_RUNTIME_COMMIT", raising=False)
    monkeypatch.delenv("MATRIX_RUNTIME_BUILD_TIME", raising=False)
    body = api.get("/v1/version").json()
    assert set(body) == {
        "name", "implementation", "version", "commit", "build_time", "mode", "python", "django",
    }  # fmt: skip
    assert body["name"] == "matrix-runtime"
    assert body["implementation"] == django_settings.IMPLEMENTATION
    assert body["version"] == django_settings.VERSION
    assert body["build_time"] == "unknown"
    assert body["python"].startswith("3.")
    assert body["django"].startswith("5.")
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=django_settings.BASE_DIR, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert body["commit"] == (head.stdout.strip() if head.returncode == 0 else "none")


def test_version_stamped_by_env(api, monkeypatch):
    monkeypatch.setenv("MATRIX_RUNTIME_COMMIT", "abc1234")
    monkeypatch.setenv("MATRIX_RUNTIME_BUILD_TIME", "2026-01-02T03:04:05Z")
    body = api.get("/v1/version").json()
    assert body["commit"] == "abc1234"
    assert body["build_time"] == "2026-01-02T03:04:05Z"


# --- ready ------------------------------------------------------------------------


def test_ready_without_heartbeats_is_503_naming_them(api):
    response = api.get("/v1/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["ready"] is False
    assert body["checks"] == {
        "mode_valid": True,
        "database": True,
        "data_dir_writable": True,
        "bus": True,
        "worker": False,
        "sandbox_host": False,
    }
    assert body["error"] == "not ready: worker, sandbox_host"
    assert body["status"] == 503
    assert body["isolation"] == isolation_tier()
    assert "local_dev_mode" in [warning["code"] for warning in body["warnings"]]


@pytest.mark.usefixtures("live_processes")
def test_ready_with_fresh_heartbeats(api):
    response = api.get("/v1/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert all(body["checks"].values())
    assert "error" not in body
    assert "status" not in body
    assert all(set(warning) == {"code", "message"} for warning in body["warnings"])


@pytest.mark.usefixtures("live_processes")
def test_ready_stale_or_stopped_heartbeat_is_not_live(api, settings):
    stale = timezone.now() - timedelta(seconds=3 * settings.MATRIX_HEARTBEAT_SECONDS + 1)
    ProcessHeartbeat.objects.filter(role="worker").update(seen_at=stale)
    process_heartbeat_stop(instance="host-test-1")
    body = api.get("/v1/ready").json()
    assert body["checks"]["worker"] is False
    assert body["checks"]["sandbox_host"] is False
    assert body["error"] == "not ready: worker, sandbox_host"


@pytest.mark.usefixtures("live_processes")
def test_ready_bus_on_closed_port_is_503(api, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    response = api.get("/v1/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["bus"] is False
    assert body["error"] == "not ready: bus"


@pytest.mark.usefixtures("live_processes")
def test_ready_in_process_bus_is_a_warning(api, settings):
    settings.REDIS_URL = ""
    response = api.get("/v1/ready")
    assert response.status_code == 200
    codes = [warning["code"] for warning in response.json()["warnings"]]
    assert "bus_in_process" in codes


@pytest.mark.usefixtures("live_processes")
def test_ready_unwritable_data_dir_is_503(api, settings):
    settings.MATRIX_DATA_DIR = Path("/proc/nope")
    body = api.get("/v1/ready").json()
    assert body["checks"]["data_dir_writable"] is False
    assert body["error"] == "not ready: data_dir_writable"


@pytest.mark.usefixtures("live_processes")
def test_ready_invalid_mode_is_503(api, settings):
    settings.MATRIX_MODE = "bogus"
    body = api.get("/v1/ready").json()
    assert body["checks"]["mode_valid"] is False
    assert body["error"] == "not ready: mode_valid"


@pytest.mark.usefixtures("live_processes")
def test_ready_production_warnings(api, settings):
    settings.MATRIX_MODE = "cloud-worker"
    settings.MATRIX_PRODUCTION = True
    settings.MATRIX_API_TOKEN = ""
    settings.MATRIX_DATABASE_KIND = "sqlite"
    settings.MATRIX_MATRIXSHELL_ENABLED = True
    response = api.get("/v1/ready")
    assert response.status_code == 200
    codes = [warning["code"] for warning in response.json()["warnings"]]
    assert codes == ["api_token_missing", "matrixshell_enabled", "sqlite_in_use"]


# --- capabilities and detection ---------------------------------------------------------


def test_capabilities_body(api, settings):
    settings.MATRIX_MAX_TTL_SECONDS = 321
    settings.MATRIX_MAX_CONCURRENT_JOBS = 7
    response = api.get("/v1/capabilities")
    assert response.status_code == 200
    body = response.json()
    assert body["capabilities"] == registered_types()
    assert set(body["runtimes"]) == {"node", "python", "ollama", "vllm", "sglang"}
    assert body["runtimes"]["python"] is True
    assert body["runtimes"]["node"] is (shutil.which("node") is not None)
    assert body["limits"] == {"max_ttl_seconds": 321, "max_concurrent_jobs": 7}


class _EngineHandler(BaseHTTPRequestHandler):
    """Answers like an OpenAI-compatible engine: 200 on /v1/models, 404 elsewhere."""

    def do_GET(self) -> None:
        status = 200 if self.path == "/v1/models" else 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"data":[]}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def engine_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EngineHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_engine_detected_by_endpoint_and_cached(api, monkeypatch, engine_url):
    monkeypatch.setenv("MATRIX_RUNTIME_VLLM_URL", engine_url)
    monkeypatch.setenv("MATRIX_RUNTIME_SGLANG_URL", f"http://127.0.0.1:{closed_port()}")
    runtimes = api.get("/v1/capabilities").json()["runtimes"]
    assert runtimes["vllm"] is True
    assert runtimes["sglang"] is (
        bool(shutil.which("sglang")) or detection.module_available("sglang")
    )
    monkeypatch.delenv("MATRIX_RUNTIME_VLLM_URL")
    assert api.get("/v1/capabilities").json()["runtimes"]["vllm"] is True  # cached
    detection.clear_cache()
    if not (shutil.which("vllm") or detection.module_available("vllm")):
        assert api.get("/v1/capabilities").json()["runtimes"]["vllm"] is False


def test_endpoint_probe_rules(engine_url):
    assert detection.endpoint_answers(engine_url, "/v1/models") is True
    assert detection.endpoint_answers(engine_url, "/nothing") is False
    assert detection.endpoint_answers(f"http://127.0.0.1:{closed_port()}", "/v1/models") is False
    assert detection.endpoint_answers("ftp://example.invalid", "/") is False


def test_engine_detected_by_executable(api, monkeypatch, tmp_path):
    program = tmp_path / "sglang"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert api.get("/v1/capabilities").json()["runtimes"]["sglang"] is True


def test_module_lookup_does_not_import():
    assert detection.module_available("json") is True
    assert detection.module_available("no_such_module_for_matrixcloud") is False


# --- the gate and methods ---------------------------------------------------------------


@pytest.mark.usefixtures("production")
@pytest.mark.parametrize("path", GATED_PATHS)
def test_gated_paths_need_credentials_in_production(api, path):
    anonymous = api.get(path)
    assert anonymous.status_code == 401
    assert anonymous.json() == {"error": "authentication required", "status": 401}
    wrong = api.get(path, **auth("not-the-token"))
    assert wrong.status_code == 401
    assert wrong.json()["status"] == 401
    assert api.get(path, **auth()).status_code == 200


@pytest.mark.usefixtures("production")
@pytest.mark.parametrize("path", OPEN_PATHS)
def test_open_paths_need_no_credentials(api, path):
    assert api.get(path).status_code in (200, 503)


@pytest.mark.usefixtures("production")
@pytest.mark.parametrize("path", OPEN_PATHS + GATED_PATHS)
def test_wrong_method_is_405_json(api, path):
    response = api.post(path, **auth())
    assert response.status_code == 405
    body = response.json()
    assert body["status"] == 405
    assert "POST" in body["error"]


@pytest.mark.parametrize("path", GATED_PATHS)
def test_gated_paths_open_to_local_dev_loopback(api, path):
    assert api.get(path).status_code == 200


# --- runtimes ---------------------------------------------------------------------


def test_runtimes_degraded_without_processes(api):
    body = api.get("/v1/runtimes").json()
    assert len(body["runtimes"]) == 1
    runtime = body["runtimes"][0]
    assert set(runtime) == {
        "id", "name", "status", "statusClass", "mode", "region", "caps", "runtimes",
        "jobs", "version", "heartbeat", "live", "processes",
    }  # fmt: skip
    assert runtime["id"] == runtime["name"] == django_settings.MATRIX_RUNTIME_ID
    assert (runtime["status"], runtime["statusClass"]) == ("Degraded", "amber")
    assert runtime["heartbeat"] == "never"
    assert runtime["live"] is False
    assert runtime["processes"] == []
    assert runtime["caps"] == registered_types()
    assert runtime["jobs"] == 0
    assert runtime["region"] == "local"


@pytest.mark.usefixtures("live_processes")
def test_runtimes_online_with_worker_and_host(api):
    runtime = api.get("/v1/runtimes").json()["runtimes"][0]
    assert (runtime["status"], runtime["statusClass"]) == ("Online", "green")
    assert runtime["heartbeat"] == "just now"
    assert runtime["live"] is True
    roles = sorted(process["role"] for process in runtime["processes"])
    assert roles == ["sandbox_host", "worker"]
    process = runtime["processes"][0]
    assert set(process) == {"role", "hostname", "pid", "started_at", "seen_at", "live"}
    assert process["pid"] == os.getpid()
    assert process["hostname"] == socket.gethostname()
    assert process["live"] is True
    assert process["seen_at"].endswith("Z")


@pytest.mark.usefixtures("live_processes")
def test_runtimes_degraded_when_host_went_quiet(api, settings):
    quiet = timezone.now() - timedelta(seconds=3 * settings.MATRIX_HEARTBEAT_SECONDS + 30)
    ProcessHeartbeat.objects.filter(role="sandbox_host").update(seen_at=quiet)
    runtime = api.get("/v1/runtimes").json()["runtimes"][0]
    assert runtime["status"] == "Degraded"
    by_role = {process["role"]: process["live"] for process in runtime["processes"]}
    assert by_role == {"worker": True, "sandbox_host": False}


def test_ago_is_for_people():
    now = timezone.now()
    assert ago(None) == "never"
    assert ago(now - timedelta(seconds=2), now=now) == "just now"
    assert ago(now - timedelta(seconds=12), now=now) == "12 s ago"
    assert ago(now - timedelta(minutes=3, seconds=5), now=now) == "3 min ago"
    assert ago(now - timedelta(hours=2, minutes=1), now=now) == "2 h ago"
    assert ago(now - timedelta(days=3), now=now) == "3 d ago"


# --- storage ----------------------------------------------------------------------


def test_storage_body(api, settings):
    """Paths are the operator's: the operator token sees them, the anonymous
    local-dev caller (the local workspace's Owner, not the operator) does not."""
    assert "data_dir" not in api.get("/v1/system/storage").json()
    settings.MATRIX_API_TOKEN = TOKEN
    body = api.get("/v1/system/storage", **auth()).json()
    assert body["data_dir"] == str(settings.MATRIX_DATA_DIR)
    assert set(body["areas"]) == {"models", "mcp", "agents", "jobs", "logs", "database"}
    assert body["total_bytes"] == sum(body["areas"].values())
    assert body["free_bytes"] > 0
    assert isinstance(body["jobs_count"], int)
    assert body["jobs_count"] >= 0


def test_storage_counts_a_written_file(api, settings):
    before = api.get("/v1/system/storage").json()
    logs = Path(settings.MATRIX_DATA_DIR) / "logs" / "nested"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "known.log").write_bytes(b"x" * 12_345)
    models = Path(settings.MATRIX_HF_CACHE_DIR) / "models--t--m" / "blobs"
    models.mkdir(parents=True, exist_ok=True)
    (models / "blob").write_bytes(b"y" * 1000)
    # A snapshot link to the blob must not count twice.
    (models.parent / "link").symlink_to(models / "blob")
    try:
        after = api.get("/v1/system/storage").json()
    finally:
        shutil.rmtree(logs)
        shutil.rmtree(models.parent)
    assert after["areas"]["logs"] - before["areas"]["logs"] == 12_345
    assert after["areas"]["models"] - before["areas"]["models"] == 1000
    assert after["total_bytes"] == sum(after["areas"].values())


def test_tree_walk_is_bounded(tmp_path):
    for index in range(10):
        (tmp_path / f"f{index}").write_bytes(b"z" * 10)
    assert storage.tree_bytes(tmp_path) == 100
    assert storage.tree_bytes(tmp_path, max_entries=3) == 30
    assert storage.tree_bytes(tmp_path / "missing") == 0


def test_sqlite_size_includes_wal_and_shm(tmp_path):
    database = tmp_path / "db.sqlite3"
    database.write_bytes(b"a" * 4096)
    Path(f"{database}-wal").write_bytes(b"b" * 100)
    Path(f"{database}-shm").write_bytes(b"c" * 10)
    assert storage.sqlite_bytes(database) == 4206


def test_storage_database_area_on_postgresql(api):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL pass only")
    assert api.get("/v1/system/storage").json()["areas"]["database"] > 0


def test_storage_hides_paths_from_non_operators():
    report = storage.storage_report(include_paths=False)
    assert "data_dir" not in report


# --- policies ---------------------------------------------------------------------


def test_policies_body(api, settings):
    settings.MATRIX_MAX_TTL_SECONDS = 900
    anonymous = api.get("/v1/policies").json()["policies"]
    assert "data_dir" not in anonymous[2]["body"]  # the local-dev caller is not the operator
    settings.MATRIX_API_TOKEN = TOKEN
    body = api.get("/v1/policies", **auth()).json()
    names = [policy["name"] for policy in body["policies"]]
    assert names == ["Sandbox Policy", "Command Policy", "Runtime Policy"]
    assert all(policy["active"] is True for policy in body["policies"])
    sandbox, command, runtime = (policy["body"] for policy in body["policies"])
    assert sandbox == {
        "max_ttl_seconds": 900,
        "max_concurrent_jobs": settings.MATRIX_MAX_CONCURRENT_JOBS,
        "startup_timeout_seconds": 45,
        "rpc_timeout_seconds": 20,
        "max_log_bytes": 1_048_576,
        "allowed_programs": ["node", "npx", "pipx", "python", "python3", "uvx"],
        "allowed_transports": ["stdio"],
        "reject_raw_secrets": True,
        "isolation": isolation_tier(),
        "limits": sandbox_limits(),
    }
    assert sandbox["limits"]["memory_mb"] == settings.MATRIX_SANDBOX_MEMORY_MB
    assert sandbox["limits"]["enforced_by"] in ("cgroup-v2", "cgroup-v1", "rlimits")
    assert command["blocked_tokens"] == sorted(command["blocked_tokens"])
    assert len(command["blocked_tokens"]) == 16
    assert {"sudo", "bash", "curl", "apt-get"} <= set(command["blocked_tokens"])
    assert command["blocked_shell_operators"] == ["&", "|", ";", "<", ">", "`", "$()", "newline"]
    assert runtime["mode"] == "local-dev"
    assert runtime["outbound_only"] is True
    assert runtime["isolation"] == isolation_tier()
    assert runtime["data_dir"] == str(settings.MATRIX_DATA_DIR)
    assert set(runtime) >= {"api_token_set", "matrixshell_enabled", "rate_limit_rpm", "cloud_url"}


def test_policies_hide_paths_from_non_operators():
    runtime = policies_describe(include_paths=False)[2]["body"]
    assert "data_dir" not in runtime


# --- catalog ----------------------------------------------------------------------


def test_catalog_has_the_originals_and_more(api):
    items = api.get("/v1/catalog").json()["items"]
    ids = [item["id"] for item in items]
    assert len(items) >= 12
    assert len(ids) == len(set(ids))
    by_id = {item["id"]: item for item in items}
    for item_id, expected in ORIGINAL_CATALOG.items():
        initials, runtime, transport, secrets, network, sandbox, command = expected
        item = by_id[item_id]
        assert item["initials"] == initials
        assert item["runtime"] == runtime
        assert item.get("transport") == transport
        assert (item["secrets"], item["network"], item["sandbox"]) == (secrets, network, sandbox)
        assert item.get("start_command") == command
        assert item["verified"] is True
        assert "version" not in item
    assert by_id["model:deepseek-v3"]["license"] == "Review required"
    assert {"mcp_server:memory", "mcp_server:time", "model:qwen2.5-0.5b"} <= set(by_id)


def _write_catalog(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "Expecting property name"),
        ({"things": []}, '"items" list'),
        ({"items": [{"id": "x"}]}, "item 0 needs a non-empty string 'initials'"),
        (None, "duplicate id 'mcp_server:filesystem'"),
    ],
)
def test_broken_catalog_is_a_500_naming_the_file(api, settings, tmp_path, content, reason):
    if content is None:
        original = json.loads(Path(django_settings.MATRIX_CATALOG_FILE).read_text())
        content = {"items": original["items"] + original["items"][:1]}
    path = _write_catalog(tmp_path / "catalog.json", content)
    settings.MATRIX_CATALOG_FILE = path
    response = api.get("/v1/catalog")
    assert response.status_code == 500
    body = response.json()
    assert body["status"] == 500
    assert str(path) in body["error"]
    assert reason in body["error"]


def test_missing_catalog_names_the_file(tmp_path):
    with pytest.raises(CatalogInvalid, match=r"missing\.json"):
        load_catalog(tmp_path / "missing.json")


def test_catalog_reloads_when_the_file_changes(api, settings, tmp_path):
    item = {
        "id": "mcp_server:one", "initials": "ON", "name": "One", "kind": "MCP Server",
        "kind_class": "green", "runtime": "Node / stdio", "transport": "", "secrets": False,
        "network": "Disabled", "verified": True, "sandbox": True, "source": "GitHub",
        "license": "MIT", "desc": "One server.",
    }  # fmt: skip
    path = _write_catalog(tmp_path / "catalog.json", {"items": [item]})
    settings.MATRIX_CATALOG_FILE = path
    first = api.get("/v1/catalog").json()["items"]
    assert first == [{key: value for key, value in item.items() if key != "transport"}]
    _write_catalog(path, {"items": [item, {**item, "id": "mcp_server:two"}]})
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert len(api.get("/v1/catalog").json()["items"]) == 2


# --- schema -----------------------------------------------------------------------


def test_schema_documents_the_platform_shapes():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path in OPEN_PATHS + GATED_PATHS:
        assert "get" in schema["paths"][path], path
    capabilities = schema["components"]["schemas"]["Capabilities"]["properties"]
    assert set(capabilities) >= {"capabilities", "runtimes", "limits"}
    detected_name = capabilities["runtimes"]["$ref"].rsplit("/", 1)[1]
    detected = schema["components"]["schemas"][detected_name]["properties"]
    assert set(detected) == {"node", "python", "ollama", "vllm", "sglang"}
    ready = schema["paths"]["/v1/ready"]["get"]
    assert {"200", "503"} <= set(ready["responses"])
    assert ready["security"] == []


# --- admin ------------------------------------------------------------------------


@pytest.fixture
def operator_client(client, django_user_model):
    operator = django_user_model.objects.create_superuser("root@example.com", "a-long-passphrase")
    client.force_login(operator)
    return client


@pytest.mark.usefixtures("live_processes")
def test_admin_pages(operator_client):
    for url in (
        "/admin/accounts/user/",
        "/admin/accounts/user/?q=root",
        "/admin/accounts/user/add/",
        "/admin/jobs/processheartbeat/",
        "/admin/jobs/processheartbeat/?q=worker",
    ):
        assert operator_client.get(url).status_code == 200, url
    heartbeat = ProcessHeartbeat.objects.get(instance="worker-test-1")
    page = operator_client.get(f"/admin/jobs/processheartbeat/{heartbeat.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content


def test_admin_adds_a_user_by_email(operator_client, django_user_model):
    response = operator_client.post(
        "/admin/accounts/user/add/",
        {
            "email": "New.Person@Example.com",
            "password1": "correct-horse-battery",
            "password2": "correct-horse-battery",
        },
    )
    assert response.status_code == 302
    user = django_user_model.objects.get(email="new.person@example.com")
    assert user.check_password("correct-horse-battery")
    duplicate = operator_client.post(
        "/admin/accounts/user/add/",
        {
            "email": "NEW.person@example.com",
            "password1": "x-y-z-1-2-3-4",
            "password2": "x-y-z-1-2-3-4",
        },
    )
    assert duplicate.status_code == 200
    assert django_user_model.objects.filter(email__iexact="new.person@example.com").count() == 1


def test_admin_user_change_page(operator_client, django_user_model):
    user = django_user_model.objects.create_user("someone@example.com", "a-long-passphrase")
    page = operator_client.get(f"/admin/accounts/user/{user.pk}/change/")
    assert page.status_code == 200
    assert b"email_verified_at" in page.content
