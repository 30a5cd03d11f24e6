"""The egress guard, attacked for real.

Every fetch the server makes of a URL someone supplied goes through
``matrixcloud.lib.egress``. Here the attacks are real: real HTTP servers on loopback
play this server's API, model servers that redirect, a slow or huge answer; the bus and
the database are the real ones of the stack under test (or, on SQLite, a listener in
the database's place). At the end a real web process (daphne) and a real sandbox host
run ``agent.run`` jobs whose endpoint is the web process's own API: the job fails
naming the refusal and the API never sees the request (no join token minted, no
audit entry, another workspace's runtime token not rotated).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from accounts.models import AuditEvent, Workspace
from jobs.models import Job
from jobs.runner import run_job
from jobs.services import job_enqueue
from matrixcloud.lib import egress
from models_registry import engines
from models_registry.models import ModelInstallation, ModelProfile
from runtimes.models import JoinToken, Runtime
from runtimes.services import join_token_issue, runtime_register
from sandbox.agent.llm import ChatEndpoint, LlmError, chat_complete
from sandbox.isolation import TIER_BUBBLEWRAP, isolation_tier
from tests import factories
from tests.deployment import READY_BOUND, Api, RoleProcess, bounded
from tests.factories import actor_of, bearer
from tests.jobs.test_jobs_worker import worker_env
from tests.matrixcloud.test_settings import start as settings_start
from tests.sandbox_processes import end_all_sessions, needs_npm, npm_server, running_host, terminal

# (status, headers, body) for (method, path)
Reply = Callable[[str, str], tuple[int, dict[str, str], bytes]]
SECRET = "mxj_the-secret-a-body-must-never-leak"
ALLOW_HINT = "refused (allow it with MATRIX_RUNTIME_EGRESS_ALLOW)"
EVERYTHING = npm_server("server-everything", "stdio")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


def json_reply(status: int = 200, body: bytes = b'{"data": []}') -> Reply:
    return lambda method, path: (status, {"Content-Type": "application/json"}, body)


def redirect_to(location: str, status: int = 303) -> Reply:
    return lambda method, path: (status, {"Location": location}, b"")


@dataclass
class Origin:
    """A real HTTP server on a loopback address that records what reached it."""

    reply: Reply = field(default_factory=json_reply)
    host: str = "127.0.0.1"
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> Origin:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                origin.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
                status, headers, body = origin.reply(self.command, self.path)
                with contextlib.suppress(OSError):
                    self.send_response(status)
                    for name, value in {"Content-Length": str(len(body)), **headers}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        serve = functools.partial(self.server.serve_forever, poll_interval=0.05)
        threading.Thread(target=serve, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refused(url: str, **kwargs: Any) -> str:
    """The guard's refusal of a GET of ``url`` (the test fails if it fetched it)."""
    with pytest.raises(egress.EgressError) as caught:
        egress.request("GET", url, timeout=3, max_bytes=1024, **kwargs)
    assert caught.value.refused, caught.value.message
    return caught.value.message


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture
def api_origin(settings: Any) -> Iterator[Origin]:
    """A loopback server in this server's place: MATRIX_RUNTIME_PORT is its port."""
    with Origin() as origin:
        settings.MATRIX_PORT = origin.port
        yield origin


# --- this server's API, in every spelling ------------------------------------------------
@pytest.mark.parametrize(
    "spelling",
    ["127.0.0.1", "2130706433", "0x7f.1", "127.1", "017700000001", "[::ffff:127.0.0.1]",
     "localhost", "LocalHost"],
)  # fmt: skip
def test_this_servers_api_is_refused_in_every_spelling(api_origin: Origin, spelling: str) -> None:
    url = f"http://{spelling}:{api_origin.port}/v1/cloud/join-tokens?x=/chat/completions"
    message = f"address 127.0.0.1:{api_origin.port} is this server's API: refused"
    assert refused(url) == message
    with pytest.raises(egress.EgressError, match=re.escape(message)):  # at creation, no DNS
        egress.url_check(url)
    assert api_origin.seen == []


def test_the_api_over_ipv6_loopback_and_the_public_url_are_refused(
    api_origin: Origin, settings: Any
) -> None:
    port = api_origin.port
    assert (
        refused(f"http://[::1]:{port}/v1/jobs")
        == f"address [::1]:{port} is this server's API: refused"
    )
    with Origin() as public:  # the address MATRIX_RUNTIME_PUBLIC_URL names (a proxy in front)
        settings.MATRIX_PUBLIC_URL = public.url
        assert (
            refused(public.url) == f"address 127.0.0.1:{public.port} is this server's API: refused"
        )
        assert public.seen == []
    assert api_origin.seen == []


def test_a_loopback_model_server_on_another_port_works_in_local_dev(api_origin: Origin) -> None:
    with Origin(json_reply(body=b'{"data": [{"id": "m"}]}')) as model:
        answer = egress.request("GET", model.url + "/v1/models", timeout=3, max_bytes=1024)
        assert (answer.status, answer.json()) == (200, {"data": [{"id": "m"}]})
        assert [(s.method, s.path) for s in model.seen] == [("GET", "/v1/models")]
    assert api_origin.seen == []


# --- redirects ---------------------------------------------------------------------------
def test_a_303_to_this_servers_api_is_not_followed(api_origin: Origin) -> None:
    target = f"http://127.0.0.1:{api_origin.port}/v1/cloud/join-tokens"
    with Origin(redirect_to(target)) as model:
        with pytest.raises(egress.EgressError) as caught:
            egress.request("POST", model.url + "/v1/chat/completions", json_body={}, timeout=3,
                           max_bytes=1024)  # fmt: skip
        assert len(model.seen) == 1
    assert (
        caught.value.message == f"address 127.0.0.1:{api_origin.port} is this server's API: refused"
    )
    assert api_origin.seen == []


def test_a_redirect_to_another_host_is_not_followed() -> None:
    with Origin() as elsewhere, Origin(redirect_to(elsewhere.url + "/v1/models", 302)) as model:
        with pytest.raises(egress.EgressError) as caught:
            egress.request("GET", model.url + "/v1/models", timeout=3, max_bytes=1024)
        assert elsewhere.seen == []
    assert caught.value.message == (
        f"the answer (302) redirected to another host (http://127.0.0.1:{elsewhere.port}): "
        "not followed"
    )


def test_a_redirect_on_the_same_origin_is_followed_and_bounded() -> None:
    def reply(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        if path == "/old":
            return 301, {"Location": "/v1/models"}, b""
        if path == "/loop":
            return 307, {"Location": "/loop"}, b""
        return 200, {"Content-Type": "application/json"}, b"[1]"

    with Origin(reply) as model:
        answer = egress.request("POST", model.url + "/old", json_body={}, timeout=3, max_bytes=64)
        assert (answer.json(), answer.url) == ([1], model.url + "/v1/models")
        assert [(s.method, s.path) for s in model.seen] == [("POST", "/old"), ("GET", "/v1/models")]
        with pytest.raises(egress.EgressError, match="more than 3 redirects: not followed"):
            egress.request("GET", model.url + "/loop", timeout=3, max_bytes=64)


# --- resolved once, connected to the checked address --------------------------------------
def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    """A resolver that answers differently the second time (DNS rebinding) is asked once:
    the request reaches the first answer's address, with the original name as Host."""
    with Origin() as checked:
        with Origin(host="127.0.0.2", port=checked.port) as rebound:
            answers = [["127.0.0.1"], ["127.0.0.2"], ["127.0.0.2"]]
            asked: list[tuple[str, int]] = []

            def resolver(host: str, port: int) -> list[str]:
                asked.append((host, port))
                return answers[len(asked) - 1]

            url = f"http://models.example.test:{checked.port}/v1/models"
            assert egress.request("GET", url, timeout=3, max_bytes=64, resolver=resolver).ok
            assert rebound.seen == []
        assert asked == [("models.example.test", checked.port)]
        assert checked.seen[0].headers["Host"] == f"models.example.test:{checked.port}"


def self_signed(name: str, folder: Path) -> tuple[Path, Path]:
    """A certificate for ``name`` signed by itself (so no trust store has it), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file


def test_tls_goes_to_the_checked_address_with_the_original_name(tmp_path: Path) -> None:
    """https: the pinned connection sends the URL's name as SNI and checks the
    certificate (a self-signed one fails), though it connects to the checked address."""
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed("models.example.test", tmp_path))
    context.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment]
    with Origin() as server:
        assert server.server is not None
        server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
        url = f"https://models.example.test:{server.port}/v1/models"
        with pytest.raises(egress.EgressError) as caught:
            egress.request("GET", url, timeout=3, max_bytes=64,
                           resolver=lambda host, port: ["127.0.0.1"])  # fmt: skip
        assert server.seen == []
    assert not caught.value.refused
    assert "certificate verify failed" in caught.value.message
    assert names == ["models.example.test"]


def test_every_resolved_address_is_judged() -> None:
    with Origin() as model:

        def resolver(host: str, port: int) -> list[str]:
            return ["127.0.0.1", "169.254.169.254"]

        message = refused(f"http://mixed.example.test:{model.port}/", resolver=resolver)
        assert (
            message
            == f"address 169.254.169.254:{model.port} is a link-local/metadata address: refused"
        )
        assert model.seen == []


# --- metadata, always; private ranges in production ---------------------------------------
METADATA_URLS = [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254:80"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "[fd00:ec2::254]:80"),
    ("http://100.100.100.200/latest/meta-data/", "100.100.100.200:80"),
    ("http://[::ffff:169.254.169.254]/", "169.254.169.254:80"),
    ("http://2852039166/", "169.254.169.254:80"),
    ("http://[fe80::1]:8080/", "[fe80::1]:8080"),
]


@pytest.mark.parametrize("production", [False, True])
@pytest.mark.parametrize(("url", "where"), METADATA_URLS)
def test_metadata_is_refused_in_every_mode_even_when_allowlisted(
    settings: Any, production: bool, url: str, where: str
) -> None:
    settings.MATRIX_PRODUCTION = production
    settings.MATRIX_EGRESS_ALLOW = ["0.0.0.0/0", "::/0", "169.254.169.254"]
    message = f"address {where} is a link-local/metadata address: refused"
    assert refused(url, configured=(url,)) == message
    with pytest.raises(egress.EgressError, match=re.escape(message)):
        egress.url_check(url)


def test_a_metadata_name_is_refused_by_its_address(settings: Any) -> None:
    settings.MATRIX_EGRESS_ALLOW = ["metadata.google.internal"]
    url = "http://metadata.google.internal/computeMetadata/v1/"
    message = refused(url, resolver=lambda host, port: ["169.254.169.254"])
    assert message == "address 169.254.169.254:80 is a link-local/metadata address: refused"


@pytest.mark.parametrize(
    ("url", "where", "kind"),
    [
        ("http://10.255.255.1/v1", "10.255.255.1:80", "a private address"),
        ("http://192.168.1.20:11434/", "192.168.1.20:11434", "a private address"),
        ("http://100.64.0.1/", "100.64.0.1:80", "a shared (CGNAT) address"),
        ("http://[fd12:3456::1]/", "[fd12:3456::1]:80", "a private address"),
        ("http://224.0.0.1/", "224.0.0.1:80", "a multicast address"),
        ("http://240.0.0.1/", "240.0.0.1:80", "a reserved address"),
        ("http://0.0.0.0:11434/", "0.0.0.0:11434", "an unspecified address"),
    ],
)
def test_production_refuses_private_ranges(settings: Any, url: str, where: str, kind: str) -> None:
    settings.MATRIX_PRODUCTION = True
    hint = "refused" if kind == "an unspecified address" else ALLOW_HINT
    assert refused(url) == f"address {where} is {kind}: {hint}"


def test_production_refuses_loopback_unless_allowed_or_configured(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.MATRIX_PRODUCTION = True
    with Origin(json_reply(body=b'{"data": [{"id": "m"}]}')) as model:
        assert (
            refused(model.url + "/v1/models")
            == f"address 127.0.0.1:{model.port} is a loopback address: {ALLOW_HINT}"
        )
        assert model.seen == []
        settings.MATRIX_EGRESS_ALLOW = ["127.0.0.0/8"]
        assert egress.request("GET", model.url + "/v1/models", timeout=3, max_bytes=64).ok
        settings.MATRIX_EGRESS_ALLOW = ["localhost"]
        local = f"http://localhost:{model.port}/v1/models"
        assert egress.request("GET", local, timeout=3, max_bytes=64).ok
        assert refused(model.url + "/v1/models").startswith("address 127.0.0.1")  # not by name
        settings.MATRIX_EGRESS_ALLOW = []
        # An engine URL the operator configured is the operator's, a user naming it too.
        monkeypatch.setenv("MATRIX_RUNTIME_VLLM_URL", model.url)
        assert engines.openai_models(model.url) == ["m"]
        with Origin() as other:
            assert "is a loopback address" in refused(other.url)
        assert len(model.seen) == 3


def test_own_services_stay_refused_when_allowlisted_or_configured(
    api_origin: Origin, settings: Any
) -> None:
    settings.MATRIX_PRODUCTION = True
    settings.MATRIX_EGRESS_ALLOW = ["127.0.0.0/8", "localhost"]
    url = f"http://localhost:{api_origin.port}/v1/jobs"
    assert (
        refused(url, configured=(url,))
        == f"address 127.0.0.1:{api_origin.port} is this server's API: refused"
    )
    assert api_origin.seen == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "10.0.0.0/33",
            "MATRIX_RUNTIME_EGRESS_ALLOW: '10.0.0.0/33' is neither a host name nor a CIDR",
        ),
        ("http://models.lan", "MATRIX_RUNTIME_EGRESS_ALLOW: 'http://models.lan' is neither"),
    ],
)
def test_a_bad_allowlist_refuses_to_start(tmp_path: Path, value: str, message: str) -> None:
    result = settings_start({"MATRIX_RUNTIME_EGRESS_ALLOW": value}, tmp_path / "data")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_the_allowlist_is_normalised() -> None:
    entries = egress.allow_entries(["10.1.2.3/8", " Models.LAN ", "fd00::/8", "192.168.1.5"])
    assert entries == ["10.0.0.0/8", "models.lan", "fd00::/8", "192.168.1.5/32"]
    with pytest.raises(ImproperlyConfigured):
        egress.allow_entries(["-bad-.lan"])


# --- bounded, and no body echoed -----------------------------------------------------------
def test_an_answer_too_large_or_too_slow_is_cut_off() -> None:
    too_large = "the answer is larger than 100000 bytes"
    with (
        Origin(json_reply(body=b"x" * 300_000)) as huge,
        pytest.raises(egress.EgressError, match=too_large),
    ):
        egress.request("GET", huge.url, timeout=3, max_bytes=100_000)

    def drip(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        time.sleep(3)
        return 200, {}, b"late"

    with Origin(drip) as slow:
        started = time.monotonic()
        with pytest.raises(egress.EgressError, match="could not be reached: timed out"):
            egress.request("GET", slow.url, timeout=0.5, max_bytes=64)
        assert time.monotonic() - started < 2


def test_error_bodies_are_never_echoed() -> None:
    html = f"<html><body>token {SECRET}</body></html>".encode()
    minted = f'{{"join_token": {{"id": "jt_1"}}, "secret": "{SECRET}"}}'.encode()
    openai_error = ('{"error": {"message": "bad key\\n\\u001b[31m' + "x" * 300 + '"}}').encode()
    replies = {
        "/html/v1/chat/completions": (500, {"Content-Type": "text/html"}, html),
        "/json/v1/chat/completions": (401, {"Content-Type": "application/json"}, openai_error),
        "/ok/v1/chat/completions": (200, {"Content-Type": "application/json"}, minted),
    }  # fmt: skip
    with Origin(lambda method, path: replies[path]) as model:
        errors = {}
        for name in ("html", "json", "ok"):
            endpoint = ChatEndpoint(base_url=f"{model.url}/{name}/v1", model="m")
            with pytest.raises(LlmError) as caught:
                asyncio.run(
                    chat_complete(endpoint, [{"role": "user", "content": "hi"}], [], timeout=3)
                )
            errors[name] = str(caught.value)
        with pytest.raises(engines.EngineError) as engine_error:
            engines.openai_warm(f"{model.url}/html", "m")
    assert errors["html"] == "the model endpoint answered 500: (no error message)"
    assert errors["json"].startswith("the model endpoint answered 401: bad key [31mxxx")
    assert len(errors["json"]) < 260
    assert "\n" not in errors["json"]
    assert "\x1b" not in errors["json"]
    assert errors["ok"].startswith("the model endpoint sent no chat completion")
    assert engine_error.value.message == f"{model.url}/html/v1/chat/completions answered HTTP 500"
    assert all(SECRET not in text for text in [*errors.values(), engine_error.value.message])


# --- model.preload and model.attach: the bus and the database, by name ----------------------
@pytest.fixture
def owner() -> tuple[Workspace, str]:
    _user, workspace, token = factories.signup("Owen Egress", "owen@egress.test", "Egress")
    return workspace, token


@pytest.fixture(params=["the bus listening", "the bus closed", "the database listening",
                        "the database closed"])  # fmt: skip
def service_port(request: Any, settings: Any) -> Iterator[tuple[str, int]]:
    """The port of the stack's real bus or database, or of one that is not listening;
    on SQLite (no database port) a listener stands in the database's place."""
    name, state = request.param.rsplit(" ", 1)
    stack = contextlib.ExitStack()
    if name == "the bus":
        port = port_of(django_settings.REDIS_URL)
        if state == "closed":
            port = free_port()
            settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    else:
        default = django_settings.DATABASES["default"]
        port = int(default.get("PORT") or 5432) if "postgresql" in default["ENGINE"] else 0
        if state == "closed" or not port:
            port = free_port() if state == "closed" else stack.enter_context(Origin()).port
            replica = {"ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1",
                       "PORT": str(port), "NAME": "replica"}  # fmt: skip
            with pytest.warns(UserWarning, match="DATABASES"):
                settings.DATABASES = {**django_settings.DATABASES, "replica": replica}
    with stack:
        yield name, port


@pytest.mark.django_db(transaction=True)
def test_preload_and_attach_at_the_bus_or_database_are_a_422_naming_it(
    api: Any, owner: tuple[Workspace, str], service_port: tuple[str, int]
) -> None:
    name, port = service_port
    _workspace, token = owner
    message = f"address 127.0.0.1:{port} is {name}: refused"
    payload = {"model": "m", "engine": "vllm", "endpoint_url": f"http://127.0.0.1:{port}"}
    response = api.post("/v1/jobs", {"type": "model.preload", "payload": payload}, **bearer(token))
    assert (response.status_code, response.json()) == (
        422, {"error": f"payload.endpoint_url: {message}", "status": 422}
    )  # fmt: skip
    profile = api.post("/v1/model-profiles", {"provider": "Hugging Face", "external_id": "a/b"},
                       **bearer(token)).json()["profile"]  # fmt: skip
    body = {"runtimeId": "local", "installMode": "external_endpoint",
            "endpointUrl": f"http://localhost:{port}/v1"}  # fmt: skip
    response = api.post(f"/v1/model-profiles/{profile['id']}/attach", body, **bearer(token))
    assert (response.status_code, response.json()) == (422, {"error": message, "status": 422})
    assert not Job.objects.exists()
    assert not ModelInstallation.objects.exists()


def run(workspace: Workspace, job_type: str, **payload: Any) -> Job:
    job = job_enqueue(job_type=job_type, payload=payload, ttl_seconds=0, actor=actor_of(workspace))
    run_job(job.pk)
    return Job.objects.get(pk=job.pk)


@pytest.mark.django_db(transaction=True)
def test_preload_and_the_attach_probe_follow_no_redirect_to_the_bus(
    api: Any, owner: tuple[Workspace, str]
) -> None:
    """A URL that passes at creation (a loopback model server) is checked at fetch
    time too: its 303 to the bus is refused by name, and its body is not shown."""
    workspace, token = owner
    bus = port_of(django_settings.REDIS_URL)
    with Origin(redirect_to(f"http://127.0.0.1:{bus}/v1/models")) as model:
        job = run(workspace, "model.preload", model="m", engine="vllm", endpoint_url=model.url)
        assert job.status == "error"
        assert job.error == f"{model.url}/v1/models: address 127.0.0.1:{bus} is the bus: refused"
        profile = ModelProfile.objects.create(workspace=workspace, source_type="url",
                                              source_uri=model.url, external_id="a/b")  # fmt: skip
        response = api.post(f"/v1/model-profiles/{profile.pk}/attach",
                            {"runtimeId": "local", "installMode": "external_endpoint"},
                            **bearer(token))  # fmt: skip
        assert response.status_code == 202, response.content
        attach = Job.objects.get(pk=response.json()["job_id"])
        run_job(attach.pk)
        attach.refresh_from_db()
    assert attach.error == f"{model.url}/v1/models: address 127.0.0.1:{bus} is the bus: refused"
    assert ModelInstallation.objects.get(job_id=attach.pk).status == "failed"
    assert [s.path for s in model.seen] == ["/v1/models", "/v1/models"]


# --- agent.run on a real server: its own API is never its model endpoint -------------------
@dataclass
class Stack:
    """A real web process (daphne, MATRIX_RUNTIME_PORT = its port) and a real sandbox
    host told the same port, on the test database and bus."""

    port: int
    web: RoleProcess

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def stack(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if isolation_tier() != TIER_BUBBLEWRAP:
        pytest.fail("agent.run runs its MCP server under bubblewrap, which is unavailable here")
    logs = tmp_path_factory.mktemp("egress-stack")
    port = free_port()
    own = {"MATRIX_RUNTIME_HOST": "127.0.0.1", "MATRIX_RUNTIME_PORT": str(port)}
    env = {
        **worker_env(),
        **own,
        "MATRIX_RUNTIME_RATE_LIMIT_RPM": "1000000",
        "PYTHONUNBUFFERED": "1",
    }
    daphne = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    web = RoleProcess("web", [*daphne, "matrixcloud.asgi:application"], env, logs / "web.log",
                      port=port)  # fmt: skip
    web.start()
    try:
        bounded(web.is_ready, READY_BOUND, "the web process to serve")
        with running_host(logs / "host.log", **own):
            yield Stack(port, web)
    finally:
        web.stop()


@dataclass
class Cast:
    """The attacker (a signed-up user) and a victim workspace with a registered runtime."""

    attacker: Workspace
    api: Api
    runtime: Runtime
    audit_before: int


@pytest.fixture
def cast(stack: Stack) -> Iterator[Cast]:
    _user, attacker, token = factories.signup("Mallory", "mallory@egress.test", "Mallory")
    _victim_user, victim, _ = factories.signup("Victor", "victor@egress.test", "Victim")
    minted = join_token_issue(label="victim", actor=actor_of(victim))
    runtime = runtime_register(join_token=minted.secret, name="victim-runtime").runtime
    yield Cast(attacker, Api(stack.port, token), runtime, AuditEvent.objects.count())
    end_all_sessions()


def agent_run(cast: Cast, **payload: Any) -> tuple[int, Any]:
    body = {"start_command": EVERYTHING, "prompt": "hi", "model": "m", **payload}
    return cast.api.post("/v1/jobs", {"type": "agent.run", "payload": body})


def nothing_reached_the_api(cast: Cast) -> None:
    """No join token minted, no runtime token rotated, no audit entry but the job's own."""
    assert list(JoinToken.objects.values_list("label", flat=True)) == ["victim"]
    assert Runtime.objects.get(pk=cast.runtime.pk).token_hash == cast.runtime.token_hash
    later = AuditEvent.objects.order_by("pk")[cast.audit_before :]
    assert {event.action for event in later} <= {"job.created"}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@needs_npm
def test_agent_run_naming_this_servers_api_is_a_422_at_creation(stack: Stack, cast: Cast) -> None:
    status, body = agent_run(cast, base_url=f"{stack.api}/v1/cloud/join-tokens?x=")
    message = f"payload.base_url: address 127.0.0.1:{stack.port} is this server's API: refused"
    assert (status, body) == (422, {"error": message, "status": 422})
    assert not Job.objects.exists()
    nothing_reached_the_api(cast)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@needs_npm
@pytest.mark.parametrize(
    "path", ["/v1/cloud/join-tokens?x=", "/v1/cloud/runtimes/{runtime}/token/rotate?x="]
)
def test_an_agent_run_whose_endpoint_is_this_servers_api_never_reaches_it(
    stack: Stack, cast: Cast, path: str
) -> None:
    """The endpoint of an attached installation is not checked at creation (it is a row):
    the fetch is, in the sandbox host, and refuses it by name."""
    endpoint = stack.api + path.format(runtime=cast.runtime.pk)
    profile = ModelProfile.objects.create(workspace=cast.attacker, source_type="url",
                                          external_id="m")  # fmt: skip
    installation = ModelInstallation.objects.create(
        workspace=cast.attacker, profile=profile, runtime_id="local",
        install_mode="external_endpoint", status="ready", endpoint_url=endpoint,
    )  # fmt: skip
    status, body = agent_run(cast, installation_id=installation.pk)
    assert status == 202, body
    job = terminal(body["job_id"], 40)
    shown = stack.api + path.split("?")[0].format(runtime=cast.runtime.pk)
    assert job.error == (
        f"agent.run: the model endpoint {shown}: "
        f"address 127.0.0.1:{stack.port} is this server's API: refused"
    )
    nothing_reached_the_api(cast)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@needs_npm
def test_a_model_server_answering_303_to_the_api_is_not_followed(stack: Stack, cast: Cast) -> None:
    with Origin(redirect_to(f"{stack.api}/v1/cloud/join-tokens")) as model:
        status, body = agent_run(cast, base_url=f"{model.url}/v1")
        assert status == 202, body
        job = terminal(body["job_id"], 40)
        assert [(s.method, s.path) for s in model.seen] == [("POST", "/v1/chat/completions")]
    assert job.error == (
        f"agent.run: the model endpoint {model.url}/v1: "
        f"address 127.0.0.1:{stack.port} is this server's API: refused"
    )
    nothing_reached_the_api(cast)
