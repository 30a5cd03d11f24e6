"""Remote runtimes and join tokens over the API (``/v1/cloud/runtimes*``,
``/v1/cloud/join-tokens*``): the original's cloud checklist (docs/COMPATIBILITY.md#c-13),
mint rules,
revocation, expiry, offline after 90 s with a frozen clock, runtime tokens rotated and
revoked, removal, tenancy (another workspace's objects are 404) and the audit trail."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import AuditEvent
from runtimes.models import JoinToken, Runtime
from tests import factories
from tests.factories import bearer, error, issue

pytestmark = pytest.mark.django_db

cast = factories.cast
clock = factories.clock

TOKENS = "/v1/cloud/join-tokens"
RUNTIMES = "/v1/cloud/runtimes"
OPERATOR_TOKEN = "operator-token-for-runtime-tests-0123456789"
REGISTER = "/v1/cloud/runtimes/register"
HEARTBEAT = "/v1/cloud/runtimes/heartbeat"
SECRET_RE = re.compile(r"mxrt_[0-9a-f]{64}")
RUNTIME_TOKEN_RE = re.compile(r"[0-9a-f]{64}")
RUNTIME_KEYS = {
    "id", "workspace_id", "name", "mode", "kind", "url", "hf_space", "region", "caps",
    "status", "version", "resources", "token_revoked", "last_seen_at", "created_at",
}  # fmt: skip
TOKEN_KEYS = {"id", "label", "max_uses", "uses", "revoked", "active", "expires_at", "created_at"}
RESOURCES = {
    "gpu_memory_mb": 81920,
    "gpu_memory_free_mb": 80000,
    "gpus": [{"name": "NVIDIA H100", "memory_mb": 81920, "memory_free_mb": 80000}],
    "engines": ["vllm", "ollama"],
    "loaded_models": ["Qwen/Qwen2.5-0.5B-Instruct"],
    "free_disk_bytes": 123456789,
}


def mint(api: Any, token: str, **body: Any) -> dict[str, Any]:
    response = api.post(TOKENS, body, **bearer(token))
    assert response.status_code == 201, response.content
    return response.json()


def register(api: Any, secret: str, **body: Any) -> Any:
    payload = {"join_token": secret, "name": "space-a", "kind": "hf-space", **body}
    return api.post(REGISTER, payload)


def registered(api: Any, owner_token: str, **body: Any) -> tuple[dict[str, Any], str]:
    """A freshly registered runtime (via a new 1-use token) and its runtime token."""
    secret = mint(api, owner_token)["secret"]
    response = register(api, secret, **body)
    assert response.status_code == 201, response.content
    return response.json()["runtime"], response.json()["runtime_token"]


def beat(api: Any, runtime_token: str, **body: Any) -> Any:
    return api.post(HEARTBEAT, body, **bearer(runtime_token))


def listed(api: Any, token: str, path: str = RUNTIMES) -> list[dict[str, Any]]:
    response = api.get(path, **bearer(token))
    assert response.status_code == 200, response.content
    key = "runtimes" if path.startswith(RUNTIMES) else "join_tokens"
    return response.json()[key]


def actions(workspace_id: str) -> list[str]:
    return list(
        AuditEvent.objects.filter(workspace_id=workspace_id)
        .order_by("seq")
        .values_list("action", flat=True)
    )


# --- the original's cloud checklist (docs/COMPATIBILITY.md#c-13) -----------------------


def test_t13_to_t18_mint_register_reuse_heartbeat_list(api, cast):
    owner = issue(cast.owner)
    minted = mint(api, owner, label="space", max_uses=1, ttl_minutes=60)  # T13
    assert SECRET_RE.fullmatch(minted["secret"])
    assert set(minted["join_token"]) == TOKEN_KEYS
    assert minted["join_token"]["max_uses"] == 1
    assert minted["join_token"]["uses"] == 0

    caps = ["mcp.test", "model.inspect"]
    first = register(api, minted["secret"], hf_space="acme/space", caps=caps)  # T14
    assert first.status_code == 201
    body = first.json()
    assert RUNTIME_TOKEN_RE.fullmatch(body["runtime_token"])
    assert set(body["runtime"]) == RUNTIME_KEYS
    assert body["runtime"]["workspace_id"] == cast.workspace.pk
    assert body["runtime"]["status"] == "online"
    assert body["runtime"]["caps"] == caps

    again = register(api, minted["secret"], hf_space="acme/space")  # T15
    assert again.status_code == 401
    assert again.json() == error("join token already used", 401)

    ok = beat(api, body["runtime_token"], status="online", caps=["mcp.test"])  # T16
    assert ok.status_code == 200
    assert ok.json()["runtime"]["caps"] == ["mcp.test"]

    bogus = beat(api, "f" * 64, status="online")  # T17
    assert bogus.status_code == 401
    assert bogus.json() == error("invalid runtime token", 401)

    runtimes = listed(api, owner)  # T18
    assert [runtime["id"] for runtime in runtimes] == [body["runtime"]["id"]]


def test_t21_runtimes_and_join_tokens_need_credentials(api, settings):
    settings.MATRIX_API_TOKEN = "operator-token-for-runtime-tests-01234"
    for method, path in (("get", RUNTIMES), ("get", TOKENS), ("post", TOKENS)):
        response = getattr(api, method)(path)
        assert response.status_code == 401
        assert response.json() == error("authentication required", 401)
    forged = api.get(RUNTIMES, **bearer("mxs_" + "5" * 64))
    assert forged.json() == error("missing or invalid bearer token", 401)


# --- join tokens: mint -------------------------------------------------------------------


def test_secrets_are_stored_only_as_sha256(api, cast):
    owner = issue(cast.owner)
    minted = mint(api, owner)
    token = JoinToken.objects.get(pk=minted["join_token"]["id"])
    assert token.token_hash == hashlib.sha256(minted["secret"].encode()).hexdigest()
    runtime, runtime_token = registered(api, owner)
    stored = Runtime.objects.get(pk=runtime["id"])
    assert stored.token_hash == hashlib.sha256(runtime_token.encode()).hexdigest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM runtimes_jointoken")
        rows = repr(cursor.fetchall())
        cursor.execute("SELECT * FROM runtimes_runtime")
        rows += repr(cursor.fetchall())
    assert minted["secret"] not in rows
    assert minted["secret"][5:] not in rows
    assert runtime_token not in rows
    assert minted["secret"] not in repr(listed(api, owner, f"{TOKENS}?all=true"))


def test_mint_defaults_to_one_use_and_24_hours(api, cast, clock):
    minted = mint(api, issue(cast.owner))["join_token"]
    token = JoinToken.objects.get(pk=minted["id"])
    assert token.max_uses == 1
    assert token.expires_at == clock.now + timedelta(hours=24)
    assert token.created_by == cast.owner
    zero = mint(api, issue(cast.owner), ttl_minutes=0, max_uses=0)["join_token"]
    assert JoinToken.objects.get(pk=zero["id"]).expires_at == clock.now + timedelta(hours=24)
    assert zero["max_uses"] == 1


def test_mint_takes_up_to_30_days(api, cast, clock):
    minted = mint(api, issue(cast.owner), ttl_minutes=30 * 24 * 60, max_uses=1000)
    token = JoinToken.objects.get(pk=minted["join_token"]["id"])
    assert token.expires_at == clock.now + timedelta(days=30)
    assert token.max_uses == 1000


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"ttl_minutes": -1}, "ttl_minutes must be between 1 and 43200 (30 days); "),
        ({"ttl_minutes": 43201}, "ttl_minutes must be between 1 and 43200 (30 days); "),
        ({"max_uses": -2}, "max_uses must be between 1 and 1000"),
        ({"max_uses": 1001}, "max_uses must be between 1 and 1000"),
    ],
)
def test_mint_out_of_range_is_422_and_mints_nothing(api, cast, body, message):
    response = api.post(TOKENS, body, **bearer(issue(cast.owner)))
    assert response.status_code == 422
    assert response.json()["status"] == 422
    assert response.json()["error"].startswith(message)
    assert not JoinToken.objects.exists()


def test_mint_bad_input_is_400(api, cast):
    owner = issue(cast.owner)
    response = api.post(TOKENS, {"max_uses": "many"}, **bearer(owner))
    assert response.status_code == 400
    assert response.json()["status"] == 400
    broken = api.post(TOKENS, "{not json", content_type="application/json", **bearer(owner))
    assert broken.status_code == 400
    assert not JoinToken.objects.exists()


def test_only_owners_and_admins_mint_and_revoke(api, cast):
    member = issue(cast.member)
    response = api.post(TOKENS, {}, **bearer(member))
    assert response.status_code == 403
    assert response.json() == error("only a workspace Owner or Admin may mint join tokens", 403)
    minted = mint(api, issue(cast.admin))
    revoke = api.post(f"{TOKENS}/{minted['join_token']['id']}/revoke", {}, **bearer(member))
    assert revoke.status_code == 403
    assert listed(api, member, TOKENS)[0]["id"] == minted["join_token"]["id"]


def test_wrong_method_is_405(api, cast):
    owner = issue(cast.owner)
    assert api.delete(TOKENS, **bearer(owner)).status_code == 405
    assert api.post(RUNTIMES, {}, **bearer(owner)).status_code == 405
    assert api.get(REGISTER).status_code == 405
    assert api.get(HEARTBEAT).status_code == 405


# --- join tokens: list, revoke, expiry ----------------------------------------------------


def test_list_shows_active_tokens_and_all_with_all_true(api, cast, clock):
    owner = issue(cast.owner)
    used = mint(api, owner, label="used")
    register(api, used["secret"])
    clock.advance(seconds=1)
    revoked = mint(api, owner, label="revoked")
    api.post(f"{TOKENS}/{revoked['join_token']['id']}/revoke", {}, **bearer(owner))
    clock.advance(seconds=1)
    mint(api, owner, label="expiring", ttl_minutes=5)
    clock.advance(minutes=1)
    active = mint(api, owner, label="active", max_uses=3)
    clock.advance(minutes=5)

    assert [t["label"] for t in listed(api, owner, TOKENS)] == ["active"]
    everything = listed(api, owner, f"{TOKENS}?all=true")
    assert [t["label"] for t in everything] == ["active", "expiring", "revoked", "used"]
    by_label = {t["label"]: t for t in everything}
    assert by_label["revoked"]["revoked"] is True
    assert by_label["revoked"]["active"] is False
    assert by_label["used"]["uses"] == 1
    assert by_label["used"]["active"] is False
    assert by_label["expiring"]["active"] is False
    assert by_label["active"]["active"] is True
    assert active["join_token"]["max_uses"] == 3


def test_revoked_token_is_refused_and_revoking_twice_changes_nothing(api, cast):
    owner = issue(cast.owner)
    minted = mint(api, owner, max_uses=5)
    url = f"{TOKENS}/{minted['join_token']['id']}/revoke"
    first = api.post(url, {}, **bearer(owner))
    assert first.status_code == 200
    assert first.json()["join_token"]["revoked"] is True
    assert api.post(url, {}, **bearer(owner)).status_code == 200

    refused = register(api, minted["secret"])
    assert refused.status_code == 401
    assert refused.json() == error("join token revoked", 401)
    assert not Runtime.objects.exists()
    assert JoinToken.objects.get(pk=minted["join_token"]["id"]).uses == 0
    assert actions(cast.workspace.pk).count("runtime.join_token.revoked") == 1
    failure = AuditEvent.objects.get(action="runtime.join_token.redeemed")
    assert failure.status == "failure"
    assert failure.meta == {"reason": "join token revoked"}


def test_expired_token_is_refused(api, cast, clock):
    minted = mint(api, issue(cast.owner), ttl_minutes=10, max_uses=2)
    clock.advance(minutes=9, seconds=59)
    assert register(api, minted["secret"]).status_code == 201
    clock.advance(seconds=1)
    refused = register(api, minted["secret"])
    assert refused.status_code == 401
    assert refused.json() == error("join token expired", 401)
    assert Runtime.objects.count() == 1


def test_unknown_join_token_is_401_and_bad_body_400(api, cast):
    unknown = register(api, "mxrt_" + "0" * 64)
    assert unknown.status_code == 401
    assert unknown.json() == error("invalid join token", 401)
    missing = api.post(REGISTER, {"name": "x"})
    assert missing.status_code == 400
    assert missing.json()["status"] == 400
    secret = mint(api, issue(cast.owner))["secret"]
    wrong = register(api, secret, caps="mcp.test")
    assert wrong.status_code == 400
    resources = register(api, secret, resources={"free_disk_bytes": -1})
    assert resources.status_code == 400
    assert JoinToken.objects.get().uses == 0, "a refused body spends no use"


def test_a_multi_use_token_registers_exactly_max_uses(api, cast):
    secret = mint(api, issue(cast.owner), max_uses=3)["secret"]
    codes = [register(api, secret, name=f"rt-{n}").status_code for n in range(5)]
    assert codes == [201, 201, 201, 401, 401]
    assert Runtime.objects.filter(workspace=cast.workspace).count() == 3
    assert JoinToken.objects.get().uses == 3


def test_register_defaults(api, cast):
    secret = mint(api, issue(cast.owner), max_uses=2)["secret"]
    named_by_space = api.post(
        REGISTER, {"join_token": secret, "hf_space": "acme/space", "caps": None}
    ).json()["runtime"]
    assert named_by_space["name"] == "acme/space"
    assert named_by_space["kind"] == "hf-space"
    assert named_by_space["caps"] == []
    assert named_by_space["mode"] == ""
    anonymous = api.post(REGISTER, {"join_token": secret}).json()["runtime"]
    assert anonymous["name"] == anonymous["id"]


# --- heartbeats, offline after 90 s -------------------------------------------------------


def test_heartbeat_records_status_caps_and_resources(api, cast):
    owner = issue(cast.owner)
    _runtime, runtime_token = registered(api, owner, caps=["mcp.test"])
    response = beat(api, runtime_token, status="busy", resources=RESOURCES, version="1.2.3")
    assert response.status_code == 200
    body = response.json()["runtime"]
    assert body["status"] == "busy"
    assert body["version"] == "1.2.3"
    assert body["resources"] == RESOURCES
    assert body["caps"] == ["mcp.test"], "absent caps leave the stored ones"
    cleared = beat(api, runtime_token, caps=[]).json()["runtime"]
    assert cleared["caps"] == []
    assert cleared["status"] == "online"
    assert cleared["resources"] == RESOURCES, "absent resources leave the stored ones"
    assert listed(api, owner)[0]["resources"] == RESOURCES


def test_heartbeat_status_is_from_a_fixed_set(api, cast):
    runtime, runtime_token = registered(api, issue(cast.owner))
    response = beat(api, runtime_token, status="sleepy")
    assert response.status_code == 400
    assert "sleepy" in response.json()["error"]
    assert Runtime.objects.get(pk=runtime["id"]).status == "online"
    for status in ("idle", "busy", "degraded", "draining", "offline", "online"):
        assert beat(api, runtime_token, status=status).json()["runtime"]["status"] == status


def test_heartbeat_without_a_token_is_401(api, cast):
    registered(api, issue(cast.owner))
    response = api.post(HEARTBEAT, {"status": "online"})
    assert response.status_code == 401
    assert response.json() == error("invalid runtime token", 401)
    bad_body = beat(api, "0" * 64, status="sleepy", caps="x")
    assert bad_body.json() == error("invalid runtime token", 401), "credentials come first"


def test_status_changes_are_audited_plain_heartbeats_are_not(api, cast):
    runtime, runtime_token = registered(api, issue(cast.owner))
    for status in ("online", "online", "busy", "busy", "online"):
        beat(api, runtime_token, status=status)
    changes = AuditEvent.objects.filter(action="runtime.status_changed").order_by("seq")
    assert [(e.meta["from"], e.meta["to"]) for e in changes] == [
        ("online", "busy"),
        ("busy", "online"),
    ]
    assert {e.actor for e in changes} == {runtime["id"]}


def test_a_runtime_is_offline_after_90_seconds_without_a_heartbeat(api, cast, clock):
    owner = issue(cast.owner)
    runtime, runtime_token = registered(api, owner)
    clock.advance(seconds=89)
    assert listed(api, owner)[0]["status"] == "online"
    clock.advance(seconds=1)
    assert listed(api, owner)[0]["status"] == "offline"
    assert Runtime.objects.get(pk=runtime["id"]).status == "online", "computed on read"
    beat(api, runtime_token, status="idle")
    assert listed(api, owner)[0]["status"] == "idle"
    clock.advance(seconds=120)
    row = Runtime.objects.get(pk=runtime["id"])
    assert not row.is_online()
    assert Runtime.objects.online().count() == 0


def test_the_offline_threshold_is_a_setting(api, cast, clock, settings):
    settings.MATRIX_RUNTIME_OFFLINE_AFTER_SECONDS = 5
    owner = issue(cast.owner)
    registered(api, owner)
    clock.advance(seconds=4)
    assert listed(api, owner)[0]["status"] == "online"
    clock.advance(seconds=1)
    assert listed(api, owner)[0]["status"] == "offline"


# --- runtime tokens: rotate, revoke; removal --------------------------------------------------


def test_rotating_a_runtime_token_retires_the_old_one(api, cast):
    owner = issue(cast.owner)
    runtime, old = registered(api, owner)
    response = api.post(f"{RUNTIMES}/{runtime['id']}/token/rotate", {}, **bearer(owner))
    assert response.status_code == 200
    new = response.json()["runtime_token"]
    assert RUNTIME_TOKEN_RE.fullmatch(new)
    assert new != old
    assert beat(api, old).json() == error("invalid runtime token", 401)
    assert beat(api, new).status_code == 200
    assert Runtime.objects.get(pk=runtime["id"]).token_rotated_at is not None


def test_a_revoked_runtime_token_is_refused_until_rotated(api, cast):
    owner = issue(cast.owner)
    runtime, runtime_token = registered(api, owner)
    revoked = api.post(f"{RUNTIMES}/{runtime['id']}/token/revoke", {}, **bearer(owner))
    assert revoked.status_code == 200
    assert revoked.json()["runtime"]["token_revoked"] is True
    refused = beat(api, runtime_token)
    assert refused.status_code == 401
    assert refused.json() == error("runtime token revoked", 401)
    rotated = api.post(f"{RUNTIMES}/{runtime['id']}/token/rotate", {}, **bearer(owner)).json()
    assert rotated["runtime"]["token_revoked"] is False
    assert beat(api, runtime_token).status_code == 401
    assert beat(api, rotated["runtime_token"]).status_code == 200
    assert {"runtime.token.revoked", "runtime.token.rotated"} <= set(actions(cast.workspace.pk))


def test_removing_a_runtime(api, cast):
    owner = issue(cast.owner)
    runtime, runtime_token = registered(api, owner)
    url = f"{RUNTIMES}/{runtime['id']}"
    assert api.get(url, **bearer(owner)).json()["runtime"]["id"] == runtime["id"]
    assert api.delete(url, **bearer(issue(cast.member))).status_code == 403
    removed = api.delete(url, **bearer(owner))
    assert removed.status_code == 200
    assert removed.json()["runtime"]["id"] == runtime["id"]
    assert listed(api, owner) == []
    assert api.get(url, **bearer(owner)).status_code == 404
    assert beat(api, runtime_token).json() == error("invalid runtime token", 401)
    assert "runtime.removed" in actions(cast.workspace.pk)


# --- tenancy ---------------------------------------------------------------------------------


def test_another_workspaces_runtimes_and_tokens_are_404(api, cast):
    owner, outsider = issue(cast.owner), issue(cast.outsider)
    minted = mint(api, owner, max_uses=2)
    runtime, runtime_token = registered(api, owner)
    assert listed(api, outsider) == []
    assert listed(api, outsider, f"{TOKENS}?all=true") == []
    for method, path in (
        ("get", f"{RUNTIMES}/{runtime['id']}"),
        ("delete", f"{RUNTIMES}/{runtime['id']}"),
        ("post", f"{RUNTIMES}/{runtime['id']}/token/rotate"),
        ("post", f"{RUNTIMES}/{runtime['id']}/token/revoke"),
        ("post", f"{TOKENS}/{minted['join_token']['id']}/revoke"),
    ):
        response = getattr(api, method)(path, **bearer(outsider))
        assert response.status_code == 404, (method, path)
        assert response.json()["status"] == 404
    assert beat(api, runtime_token).status_code == 200
    assert register(api, minted["secret"]).status_code == 201
    unknown = api.get(f"{RUNTIMES}/rt_0000000000000000", **bearer(owner))
    assert unknown.json() == error("runtime rt_0000000000000000 not found", 404)


def test_the_operator_names_a_workspace_or_sees_all(api, cast, settings):
    owner = issue(cast.owner)
    runtime, _ = registered(api, owner)
    registered(api, issue(cast.outsider))
    # The anonymous local-dev caller is not the operator: the workspaces' runtimes are
    # behind a session (as in the original), named workspace or not.
    assert api.get(RUNTIMES).status_code == 401
    assert api.get(RUNTIMES, HTTP_X_MATRIX_WORKSPACE=cast.workspace.slug).status_code == 401
    settings.MATRIX_API_TOKEN = OPERATOR_TOKEN
    operator = bearer(OPERATOR_TOKEN)
    assert len(api.get(RUNTIMES, **operator).json()["runtimes"]) == 2
    named = api.get(RUNTIMES, HTTP_X_MATRIX_WORKSPACE=cast.workspace.slug, **operator)
    assert [r["id"] for r in named.json()["runtimes"]] == [runtime["id"]]


# --- audit and query budget --------------------------------------------------------------------


def test_every_state_change_is_audited(api, cast):
    owner = issue(cast.owner)
    minted = mint(api, owner, label="audited")
    runtime = register(api, minted["secret"]).json()["runtime"]
    api.post(f"{RUNTIMES}/{runtime['id']}/token/rotate", {}, **bearer(owner))
    api.post(f"{RUNTIMES}/{runtime['id']}/token/revoke", {}, **bearer(owner))
    api.post(f"{TOKENS}/{minted['join_token']['id']}/revoke", {}, **bearer(owner))
    api.delete(f"{RUNTIMES}/{runtime['id']}", **bearer(owner))
    assert [a for a in actions(cast.workspace.pk) if a.startswith("runtime.")] == [
        "runtime.join_token.created",
        "runtime.join_token.redeemed",
        "runtime.registered",
        "runtime.token.rotated",
        "runtime.token.revoked",
        "runtime.join_token.revoked",
        "runtime.removed",
    ]
    created = AuditEvent.objects.get(action="runtime.join_token.created")
    assert created.actor == cast.owner.pk
    assert created.target == minted["join_token"]["id"]
    assert created.meta["label"] == "audited"
    assert created.meta["max_uses"] == 1
    registered_event = AuditEvent.objects.get(action="runtime.registered")
    assert registered_event.actor == runtime["id"]


def test_list_endpoints_have_a_query_budget(api, cast):
    owner = issue(cast.owner)
    registered(api, owner, resources=RESOURCES)

    def queries_to_list() -> int:
        with CaptureQueriesContext(connection) as queries:
            listed(api, owner)
            listed(api, owner, f"{TOKENS}?all=true")
        return len(queries)

    few = queries_to_list()
    for _ in range(4):
        registered(api, owner, resources=RESOURCES)
    assert len(listed(api, owner)) == 5
    assert queries_to_list() == few <= 12, "the query count does not grow with the rows"
