"""``manage.py import_original``: a team moves from the original Go runtime.

The source is a database in the original's schema built by ``tests/original_db.py``
(a SQLite file here; the same rows in a PostgreSQL schema in
``test_import_original_postgres.py``). After importing it twice, its users sign in with
their original passwords and find their workspace's models, runtimes, tokens and keys,
and nothing of the other workspace; the audit chain still verifies.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.audit import audit_verify
from accounts.models import (
    AuditEvent,
    Membership,
    ProviderCredential,
    SessionToken,
    UsageEvent,
    User,
    Workspace,
)
from accounts.principals import Actor
from accounts.services.providers import provider_secret_read
from matrixcloud.importer.mapping import TABLES
from matrixcloud.importer.secretbox import key_from_value
from models_registry.models import ModelInstallation, ModelProfile
from runtimes.models import JoinToken, Runtime
from tests import original_db
from tests.factories import bearer, join, signup
from tests.original_db import (
    ACME,
    CRAFTED_KEY_HEX,
    GLOBEX,
    KEY_HEX,
    LEE,
    MALLORY,
    MALLORY_EMAIL,
    MALLORY_PASSWORD,
    MAYA,
    OSCAR,
    Crafted,
    Original,
    go_password_hash,
    sha256_hex,
)

pytestmark = pytest.mark.django_db

MODELS = [
    Workspace,
    User,
    Membership,
    SessionToken,
    ModelProfile,
    ModelInstallation,
    Runtime,
    JoinToken,
    ProviderCredential,
    UsageEvent,
    AuditEvent,
]
RAW_KEY = bytes(range(200, 232))  # has + / and - _ in its two base64 forms
KEY_VARIABLES = ("MATRIXCLOUD_ORIGINAL_SECRET_KEY", "MATRIXCLOUD_SECRET_KEY")


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, Original]:
    """The original's data dir: its matrixcloud.db and, beside it, its secret.key."""
    path = tmp_path / "matrixcloud.db"
    original = original_db.build_sqlite(path)
    (tmp_path / "secret.key").write_text(KEY_HEX + "\n")
    return path, original


def run(*args: str) -> str:
    out = StringIO()
    call_command("import_original", *args, stdout=out)
    return out.getvalue()


def counts() -> dict[str, int]:
    return {model.__name__: model._default_manager.count() for model in MODELS}


def table_line(output: str, table: str) -> str:
    """The report's line for ``table``, its columns joined by single spaces."""
    line = next(line for line in output.splitlines() if line.strip().startswith(table + " "))
    return " ".join(line.split())


def refused(*args: str) -> tuple[str, str]:
    """Run an import that must be refused: its error and the report it printed."""
    out = StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("import_original", *args, stdout=out)
    return str(failure.value), out.getvalue()


def login(api: Any, email: str, password: str) -> str:
    response = api.post("/v1/auth/login", {"email": email, "password": password})
    assert response.status_code == 200, response.content
    return str(response.json()["token"])


def test_import_twice_creates_each_row_once(source):
    path, original = source
    first = run("--sqlite", str(path))

    assert (
        table_line(first, "users") == "users 3 created, 0 unchanged, 0 kept, 0 skipped, 0 collided"
    )
    assert table_line(first, "sessions").startswith(
        "sessions 2 created"
    )  # the expired one is left behind
    assert "1 sessions expired or unusable (not imported)" in first
    assert "1 password-reset links not carried (ask again)" in first
    after_first = counts()
    assert after_first == {
        "Workspace": 2,
        "User": 3,
        "Membership": 3,
        "SessionToken": 2,
        "ModelProfile": 3,
        "ModelInstallation": 3,
        "Runtime": 2,
        "JoinToken": 3,
        "ProviderCredential": 3,
        "UsageEvent": 4,
        "AuditEvent": original.counts["audit_events"] + 1,  # and the import's own record
    }

    second = run("--sqlite", str(path))

    assert counts() == after_first
    for table in TABLES:  # every row found here, the same as the source has it
        assert " 0 created, " in table_line(second, table)
        assert table_line(second, table).endswith(" 0 kept, 0 skipped, 0 collided")
    assert table_line(second, "audit events") == (
        f"audit events 0 created, {original.counts['audit_events']} unchanged, 0 kept, "
        "0 skipped, 0 collided"
    )
    assert audit_verify().ok


def test_a_user_signs_in_with_the_original_password_and_sees_only_their_workspace(api, source):
    path, original = source
    run("--sqlite", str(path))
    run("--sqlite", str(path))
    assert User.objects.get(pk=MAYA).password.startswith("pbkdf2$120000$")

    token = login(api, "maya@acme.io", original.passwords["maya@acme.io"])

    assert User.objects.get(pk=MAYA).password.startswith("argon2")  # upgraded on sign-in
    me = api.get("/v1/auth/me", **bearer(token)).json()["user"]
    assert (me["id"], me["workspace_id"], me["workspace"], me["role"]) == (
        MAYA,
        ACME,
        "Acme",
        "Owner",
    )
    profiles = api.get("/v1/model-profiles", **bearer(token)).json()["profiles"]
    assert {p["id"]: p["status"] for p in profiles} == {
        "mp_00000000000qwen": "ready",
        "mp_0000000000llama": "failed",  # its attach job lived in the original's memory
    }
    qwen = next(p for p in profiles if p["id"] == "mp_00000000000qwen")
    assert qwen["tags"] == ["text-generation", "chat"]
    assert qwen["metadata"] == {"downloads": 12345, "gated": False}
    installations = api.get("/v1/model-installations", **bearer(token)).json()["installations"]
    assert {(i["id"], i["status"], i["progress"]) for i in installations} == {
        ("mi_00000000000qwen", "ready", 100),
        ("mi_0000000000llama", "failed", 43),
    }
    runtimes = api.get("/v1/cloud/runtimes", **bearer(token)).json()["runtimes"]
    assert [(r["id"], r["name"], r["caps"]) for r in runtimes] == [
        ("rt_00000000000acme", "acme-gpu-1", ["mcp.test", "model.attach"])
    ]
    tokens = api.get("/v1/cloud/join-tokens?all=true", **bearer(token)).json()["join_tokens"]
    assert {t["id"] for t in tokens} == {"jt_000000000000new", "jt_00000000000used"}
    providers = api.get("/v1/cloud/providers", **bearer(token)).json()["providers"]
    assert {(p["id"], p["provider"], p["label"], p["hint"]) for p in providers} == {
        ("pc_000000000000ahf", "huggingface", "default", "••••7890"),
        ("pc_0000000000aopen", "openai", "work", "••••cdef"),
    }
    for (workspace, provider, label), secret in original.provider_secrets.items():
        read = provider_secret_read(
            actor=Actor.job_creator(workspace, None), provider=provider, label=label, purpose="test"
        )
        assert read == secret
    assert audit_verify().ok


def test_another_workspaces_rows_stay_invisible(api, source):
    path, original = source
    run("--sqlite", str(path))
    token = login(api, "lee@acme.io", original.passwords["lee@acme.io"])
    assert api.get("/v1/auth/me", **bearer(token)).json()["user"]["role"] == "Member"

    listed = [
        api.get(url, **bearer(token)).json()
        for url in ("/v1/model-profiles", "/v1/model-installations", "/v1/cloud/runtimes")
    ]
    assert "globe" not in str(listed)  # no Globex id anywhere
    assert api.get("/v1/cloud/runtimes/rt_0000000000globe", **bearer(token)).status_code == 404
    attach = api.post(
        "/v1/model-profiles/mp_00000000globexm/attach",
        {"runtimeId": "rt_local"},
        **bearer(token),
    )
    assert attach.status_code == 404
    owner = login(api, "maya@acme.io", original.passwords["maya@acme.io"])
    audit = api.get("/v1/cloud/audit", **bearer(owner)).json()["events"]
    assert "au_00000000000001" in {e["id"] for e in audit}  # an imported row
    assert {e["workspace_id"] for e in audit} == {ACME}
    outsider = login(api, "oscar@globex.io", original.passwords["oscar@globex.io"])
    providers = api.get("/v1/cloud/providers", **bearer(outsider)).json()["providers"]
    assert [p["id"] for p in providers] == ["pc_000000000000ghf"]


def test_carried_tokens_keep_working(api, source):
    path, original = source
    run("--sqlite", str(path))

    me = api.get("/v1/auth/me", **bearer(original.session_token))
    assert me.status_code == 200
    assert me.json()["user"]["id"] == MAYA
    assert api.get("/v1/auth/me", **bearer(original.expired_session_token)).status_code == 401
    beat = api.post(
        "/v1/cloud/runtimes/heartbeat", {"status": "idle"}, **bearer(original.runtime_token)
    )
    assert beat.status_code == 200, beat.content
    assert beat.json()["runtime"]["id"] == "rt_00000000000acme"
    registered = api.post(
        "/v1/cloud/runtimes/register",
        {"join_token": original.join_secret, "name": "spare", "kind": "self-hosted"},
    )
    assert registered.status_code == 201, registered.content
    assert registered.json()["runtime"]["workspace_id"] == ACME
    assert JoinToken.objects.get(pk="jt_000000000000new").uses == 1
    assert not SessionToken.objects.filter(token_hash=original.session_token).exists()


def test_audit_history_is_appended_in_the_original_order(source):
    path, original = source
    before = AuditEvent.objects.count()
    run("--sqlite", str(path))

    imported = list(AuditEvent.objects.order_by("seq")[before:])
    assert [e.id for e in imported[:-1]] == original.audit_ids
    assert imported[-1].action == "original.imported"
    assert imported[-1].meta["created"]["users"] == 3
    failed = AuditEvent.objects.get(id="au_0000000000000a")
    assert (failed.workspace_id, failed.actor, failed.status) == (None, "lee@acme.io", "failure")
    created = [e.created_at for e in imported[:-1]]
    assert created == sorted(created)
    report = audit_verify()
    assert report.ok
    assert report.checked == AuditEvent.objects.count()


def test_other_fields_arrive_as_the_original_had_them(source):
    path, _ = source
    run("--sqlite", str(path))

    maya = User.objects.get(pk=MAYA)
    assert maya.email_verified_at is not None  # her verification link was used
    assert User.objects.get(pk=LEE).email_verified_at is None
    assert Membership.objects.get(user_id=OSCAR).workspace_id == GLOBEX
    with sqlite3.connect(path) as source_db:
        created = dict(source_db.execute("SELECT id, created_at FROM users"))
    assert maya.created_at.strftime("%Y-%m-%dT%H:%M:%SZ") == created[MAYA]
    membership = Membership.objects.get(user_id=MAYA)
    assert (membership.role, membership.created_at) == ("Owner", maya.created_at)
    assert Workspace.objects.get(pk=ACME).created_at < maya.created_at + timedelta(seconds=1)
    spare = JoinToken.objects.get(pk="jt_000000000000new")
    assert (spare.label, spare.max_uses, spare.uses, spare.revoked) == ("spare gpu", 2, 0, False)
    assert spare.expires_at.year == 2999  # the original's "never"
    assert spare.created_by_id == MAYA
    openai = ProviderCredential.objects.get(pk="pc_0000000000aopen")
    assert openai.meta == {"org": "research"}
    assert UsageEvent.objects.get(pk="ue_00000000000003").quantity == 1834


def test_secrets_are_stored_encrypted_under_our_key_ring(source):
    path, original = source
    run("--sqlite", str(path))

    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM accounts_providercredential")
        stored = [row[0] for row in cursor.fetchall()]
    assert len(stored) == 3
    assert all(value.startswith("mxe1:") for value in stored)
    for secret in original.provider_secrets.values():
        assert not any(secret in value for value in stored)


def test_dry_run_reports_and_writes_nothing(source):
    path, _ = source
    before = counts()
    output = run("--sqlite", str(path), "--dry-run")

    assert counts() == before
    assert output.startswith(f"would import from {path}:")
    assert (
        table_line(output, "users") == "users 3 created, 0 unchanged, 0 kept, 0 skipped, 0 collided"
    )
    assert output.rstrip().endswith("dry run: nothing was written")


def test_rows_already_here_are_kept_not_overwritten(source):
    path, _ = source
    run("--sqlite", str(path))
    User.objects.filter(pk=LEE).update(name="Lee P. (renamed here)")

    output = run("--sqlite", str(path))

    assert (
        table_line(output, "users") == "users 0 created, 2 unchanged, 1 kept, 0 skipped, 0 collided"
    )
    assert User.objects.get(pk=LEE).name == "Lee P. (renamed here)"


def test_an_email_taken_here_by_another_account_refuses_the_import(source):
    path, _ = source
    signup("Maya Elsewhere", "MAYA@acme.io", "Elsewhere", password="a long enough password 1")
    before = counts()

    with pytest.raises(CommandError, match=r"user usr_00000000000maya \(maya@acme.io\)"):
        run("--sqlite", str(path))

    assert counts() == before


def test_a_wrong_key_fails_before_anything_is_written(source, tmp_path):
    path, _ = source
    (tmp_path / "secret.key").write_text("11" * 32)
    before = counts()

    with pytest.raises(CommandError) as failure:
        run("--sqlite", str(path))

    assert f"the key from the key file {tmp_path / 'secret.key'} does not open" in str(
        failure.value
    )
    assert counts() == before


def test_a_wrong_key_in_the_environment_is_named(source, monkeypatch):
    path, _ = source
    monkeypatch.setenv("MATRIXCLOUD_ORIGINAL_SECRET_KEY", "not the passphrase")
    before = counts()

    with pytest.raises(CommandError, match="environment variable MATRIXCLOUD_ORIGINAL_SECRET_KEY"):
        run("--sqlite", str(path))
    assert counts() == before


def test_the_key_can_come_from_the_environment_or_a_key_file(source, tmp_path, monkeypatch):
    path, original = source
    elsewhere = tmp_path / "kept-safe.key"
    (tmp_path / "secret.key").rename(elsewhere)
    run("--sqlite", str(path), "--dry-run", "--key-file", str(elsewhere))
    monkeypatch.setenv("MATRIXCLOUD_SECRET_KEY", KEY_HEX)  # the original's own variable
    run("--sqlite", str(path))
    assert ProviderCredential.objects.count() == len(original.provider_secrets)


def test_a_missing_key_names_the_variable_and_the_file(source, tmp_path):
    path, _ = source
    (tmp_path / "secret.key").unlink()

    with pytest.raises(CommandError) as failure:
        run("--sqlite", str(path))

    message = str(failure.value)
    assert "MATRIXCLOUD_ORIGINAL_SECRET_KEY" in message
    assert "--key-file" in message
    assert str(tmp_path / "secret.key") in message
    assert User.objects.count() == 0


def test_sessions_can_be_left_behind(source):
    path, _ = source
    output = run("--sqlite", str(path), "--skip-sessions")
    assert SessionToken.objects.count() == 0
    assert "every user must sign in again" in output


def test_a_file_that_is_not_the_originals_database_is_refused(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE users (id TEXT, email TEXT)")
    with pytest.raises(CommandError, match="is not the original's database: it has no table"):
        run("--sqlite", str(other))

    text = tmp_path / "notes.db"
    text.write_text("just some notes, not a database at all " * 50)
    with pytest.raises(CommandError, match="is not a SQLite database"):
        run("--sqlite", str(text))

    with pytest.raises(CommandError, match="no SQLite database at"):
        run("--sqlite", str(tmp_path / "absent.db"))
    assert User.objects.count() == 0


def test_a_missing_column_is_named(tmp_path):
    path = tmp_path / "matrixcloud.db"
    original_db.build_sqlite(path)
    with sqlite3.connect(path) as connection:
        connection.execute("ALTER TABLE runtimes DROP COLUMN caps_json")
    with pytest.raises(CommandError, match="table runtimes has no column caps_json"):
        run("--sqlite", str(path))


def test_an_unreachable_postgres_is_a_clear_error_without_the_password():
    url = "postgresql://migrator:hunter2secret@127.0.0.1:1/original"
    with pytest.raises(CommandError) as failure:
        run("--postgres", url)
    message = str(failure.value)
    assert "cannot connect to PostgreSQL at postgresql://migrator:***@127.0.0.1:1/original" in (
        message
    )
    assert "hunter2secret" not in message


def test_the_source_file_is_not_changed(source):
    path, _ = source
    before = path.read_bytes()
    run("--sqlite", str(path))
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (KEY_HEX, bytes.fromhex(KEY_HEX)),
        ("  " + KEY_HEX.upper() + "\n", bytes.fromhex(KEY_HEX)),
        (base64.b64encode(RAW_KEY).decode(), RAW_KEY),  # standard base64
        (base64.b64encode(RAW_KEY).decode().rstrip("="), RAW_KEY),  # raw standard
        (base64.urlsafe_b64encode(RAW_KEY).decode(), RAW_KEY),  # URL
        (base64.urlsafe_b64encode(RAW_KEY).decode().rstrip("="), RAW_KEY),  # raw URL
        ("a passphrase", hashlib.sha256(b"a passphrase").digest()),
        (base64.b64encode(b"short").decode(), hashlib.sha256(b"c2hvcnQ=").digest()),
    ],
)
def test_the_originals_key_resolution(value, expected):
    assert key_from_value(value) == expected


def test_a_workspace_slug_taken_here_gets_a_fresh_one(api, source):
    path, original = source
    signup("Someone Else", "someone@else.test", "Acme", password="a long enough password 1")
    output = run("--sqlite", str(path))

    assert Workspace.objects.get(pk=ACME).slug == "acme-1"
    assert f"workspace {ACME}: slug 'acme' is taken; given 'acme-1'" in output
    token = login(api, "maya@acme.io", original.passwords["maya@acme.io"])
    assert api.get("/v1/auth/me", **bearer(token)).json()["user"]["workspace_slug"] == "acme-1"


def test_values_ours_does_not_allow_are_normalised_and_reported(source):
    path, _ = source
    with sqlite3.connect(path) as connection:
        connection.executescript(
            """
            UPDATE provider_credentials SET provider = 'Hugging Face', label = 'team key'
                WHERE id = 'pc_000000000000ahf';
            UPDATE runtimes SET status = 'pending' WHERE id = 'rt_00000000000acme';
            UPDATE runtimes SET token_hash = '' WHERE id = 'rt_0000000000globe';
            UPDATE runtime_join_tokens SET uses = 3 WHERE id = 'jt_00000000000used';
            UPDATE users SET password_hash = 'bcrypt$whatever' WHERE id = 'usr_000000000000lee';
            UPDATE users SET role = 'superuser' WHERE id = 'usr_000000000000lee';
            UPDATE model_profiles SET display_name = 'Qwen' || char(0) || '2.5'
                WHERE id = 'mp_00000000000qwen';
            UPDATE usage_events SET meta_json = '{"note":"a\\u0000b"}'
                WHERE id = 'ue_00000000000001';
            UPDATE audit_events SET meta_json = 'not json', created_at = '2026-01-02T03:04:05+02:00'
                WHERE id = 'au_00000000000001';
            """
        )
    output = run("--sqlite", str(path))

    hf = ProviderCredential.objects.get(pk="pc_000000000000ahf")
    assert (hf.provider, hf.label) == ("hugging-face", "team-key")
    assert "'Hugging Face'/'team key' stored as hugging-face/team-key" in output
    assert Runtime.objects.get(pk="rt_00000000000acme").status == "offline"
    assert "1 runtimes with the status 'pending' (now offline)" in output
    globex = Runtime.objects.get(pk="rt_0000000000globe")
    assert globex.token_revoked
    assert "1 runtimes without a token (rotate it or register again)" in output
    used = JoinToken.objects.get(pk="jt_00000000000used")
    assert (used.uses, used.max_uses) == (1, 1)
    lee = User.objects.get(pk=LEE)
    assert not lee.has_usable_password()
    assert "1 users whose password hash is unusable (they must reset it)" in output
    assert Membership.objects.get(user_id=LEE).role == "Member"
    assert ModelProfile.objects.get(pk="mp_00000000000qwen").display_name == "Qwen\ufffd2.5"
    assert UsageEvent.objects.get(pk="ue_00000000000001").meta == {"note": "a\ufffdb"}
    event = AuditEvent.objects.get(id="au_00000000000001")
    assert event.meta == {}
    assert event.created_at.isoformat() == "2026-01-02T01:04:05+00:00"
    assert audit_verify().ok
    again = run("--sqlite", str(path))
    assert (
        table_line(again, "runtimes")
        == "runtimes 0 created, 2 unchanged, 0 kept, 0 skipped, 0 collided"
    )
    assert (
        table_line(again, "users") == "users 0 created, 3 unchanged, 0 kept, 0 skipped, 0 collided"
    )


REFUSE_USAGE = {
    "sqlite": [
        """CREATE TRIGGER refuse_usage BEFORE INSERT ON accounts_usageevent
           BEGIN SELECT RAISE(ABORT, 'usage refused by a test trigger'); END""",
    ],
    "postgresql": [
        """CREATE FUNCTION refuse_usage() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'usage refused by a test trigger'
           USING ERRCODE = 'check_violation'; END $$""",
        """CREATE TRIGGER refuse_usage BEFORE INSERT ON accounts_usageevent
           FOR EACH ROW EXECUTE FUNCTION refuse_usage()""",
    ],
}


def test_a_row_refused_late_rolls_back_everything_written_before_it(source):
    path, _ = source
    with connection.cursor() as cursor:
        for statement in REFUSE_USAGE[connection.vendor]:
            cursor.execute(statement)
    before = counts()

    refused = r"refused a row \(usage refused by a test trigger.*nothing was imported"
    with pytest.raises(CommandError, match=refused):
        run("--sqlite", str(path))

    assert counts() == before  # workspaces, users... were inserted before usage events
    assert audit_verify().ok


# --- Collisions: a crafted source meets rows that are here already --------------------


@dataclass(frozen=True)
class Victim:
    """A workspace here (not imported): its Owner's session, a join token and a runtime."""

    workspace: str
    owner: str
    owner_token: str
    join_secret: str
    runtime: str
    runtime_token: str


def victim_here(api: Any) -> Victim:
    """Vera signs up, invites Mo, mints a join token and registers a runtime, over HTTP."""
    owner, workspace, token = signup("Vera Victim", "vera@victim.test", "Victim Co")
    join(workspace, owner, name="Mo Member", email="mo@victim.test")
    minted = api.post("/v1/cloud/join-tokens", {"label": "gpu", "max_uses": 3}, **bearer(token))
    assert minted.status_code == 201, minted.content
    secret = minted.json()["secret"]
    registered = api.post(
        "/v1/cloud/runtimes/register",
        {"join_token": secret, "name": "victim-gpu", "kind": "self-hosted"},
    )
    assert registered.status_code == 201, registered.content
    body = registered.json()
    return Victim(
        workspace=workspace.pk,
        owner=owner.pk,
        owner_token=token,
        join_secret=secret,
        runtime=body["runtime"]["id"],
        runtime_token=body["runtime_token"],
    )


def members(api: Any, token: str) -> list[tuple[str, str, str]]:
    response = api.get("/v1/auth/members", **bearer(token))
    assert response.status_code == 200, response.content
    return sorted((m["user_id"], m["email"], m["role"]) for m in response.json()["members"])


def crafted_source(tmp_path: Path, tables: dict[str, list[dict[str, Any]]]) -> Path:
    """The crafted database and, beside it, the crafter's own secret.key."""
    folder = tmp_path / "crafted"
    folder.mkdir()
    original_db.write_sqlite(folder / "matrixcloud.db", tables)
    (folder / "secret.key").write_text(CRAFTED_KEY_HEX + "\n")
    return folder / "matrixcloud.db"


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        assert sha256_hex(secret) not in text


def assert_locked_out(api: Any, crafted: Crafted, victim: Victim) -> None:
    """Nothing the crafter knows opens or acts on the victim's workspace, over HTTP."""
    for url in ("/v1/auth/me", "/v1/auth/members", "/v1/cloud/providers", "/v1/cloud/audit"):
        assert api.get(url, **bearer(crafted.session_token)).status_code == 401, url
    signin = {"email": MALLORY_EMAIL, "password": MALLORY_PASSWORD}
    assert api.post("/v1/auth/login", signin).status_code == 401
    registered = api.post(
        "/v1/cloud/runtimes/register", {"join_token": crafted.join_secret, "name": "x"}
    )
    assert registered.status_code == 401, registered.content
    beat = api.post(
        "/v1/cloud/runtimes/heartbeat", {"status": "idle"}, **bearer(crafted.runtime_token)
    )
    assert beat.status_code == 401, beat.content
    seen = [
        api.get(url, **bearer(victim.owner_token)).json()
        for url in (
            "/v1/model-profiles",
            "/v1/model-installations",
            "/v1/cloud/runtimes",
            "/v1/cloud/join-tokens?all=true",
            "/v1/cloud/providers",
            "/v1/cloud/usage",
            "/v1/cloud/audit",
        )
    ]
    assert original_db.CRAFTED not in str(seen).lower()  # no crafted id, name or email


def test_a_crafted_source_cannot_take_over_a_workspace_here(api, tmp_path):
    victim = victim_here(api)
    tables, crafted = original_db.crafted_rows(victim.workspace)
    path = crafted_source(tmp_path, tables)
    team = members(api, victim.owner_token)
    assert sorted(role for *_, role in team) == ["Member", "Owner"]
    before = counts()

    dry = run("--sqlite", str(path), "--dry-run")

    assert counts() == before
    for table in TABLES:  # a row in every table, each one joining the victim's workspace
        expected = "1 created" if table == "users" else "1 collided"  # Mallory herself is new
        assert expected in table_line(dry, table), table
    ws = victim.workspace
    for line in (
        f"  workspaces: workspace {ws}: already here, and not imported from this source",
        f"  memberships: membership of {MALLORY} in {ws}: its workspace {ws} is not this source's",
        f"  sessions: a session of {MALLORY}: its workspace {ws} is not this source's",
        f"  runtimes: runtime rt_0000000mallory: its workspace {ws} is not this source's",
        f"  join tokens: join token jt_0000000mallory: its workspace {ws} is not this source's",
        f"  provider credentials: provider credential pc_0000000mallory: its workspace {ws} "
        "is not this source's",
        f"  audit events: audit event au_0000000mallory: its workspace {ws} is not this source's",
    ):
        assert line in dry.splitlines()
    assert "collisions: 10 rows would join or take over rows here" in dry
    assert "they would refuse the import" in dry
    assert dry.rstrip().endswith("dry run: nothing was written")
    secrets = (crafted.session_token, crafted.join_secret, crafted.runtime_token)
    assert_no_secret(dry, *secrets, crafted.provider_secret)

    message, report = refused("--sqlite", str(path))

    assert "refused: 10 rows of the source collide with rows here" in message
    assert f"workspace {ws}: already here, and not imported from this source" in message
    assert report.startswith(f"refused to import from {path}:")
    assert report.rstrip().endswith("import refused: nothing was written")
    assert_no_secret(message + report, *secrets, crafted.provider_secret)
    assert counts() == before
    assert not User.objects.filter(pk=MALLORY).exists()
    assert audit_verify().ok
    assert_locked_out(api, crafted, victim)
    assert members(api, victim.owner_token) == team  # the Owner is still Vera, alone


def test_a_crafted_source_cannot_take_over_a_user_or_a_token_here(api, tmp_path):
    victim = victim_here(api)
    theirs = "ws_0000000mallory"  # a workspace of the crafter's own this time
    tables, crafted = original_db.crafted_rows(theirs)
    planted = "ab" * 32  # a session the crafter would hold for Vera's account
    vera_as_theirs = {  # Vera's id, with the crafter's email and password
        **tables["users"][0],
        "id": victim.owner,
        "email": "vera-again@crafted.test",
        "password_hash": go_password_hash(MALLORY_PASSWORD),
    }
    mo_again = {**tables["users"][0], "id": "usr_000000mallory2", "email": "MO@victim.test"}
    tables["users"] += [vera_as_theirs, mo_again]
    session = tables["sessions"][0]
    tables["sessions"] = [
        {**session, "token": planted, "user_id": victim.owner},
        {**session, "token": victim.owner_token},  # Vera's own token, for Mallory
    ]
    tables["runtime_join_tokens"][0]["token_hash"] = sha256_hex(victim.join_secret)
    tables["runtimes"][0]["token_hash"] = sha256_hex(victim.runtime_token)
    signup_event = AuditEvent.objects.filter(workspace_id=victim.workspace).order_by("seq")[0]
    tables["audit_events"][0]["id"] = signup_event.id
    path = crafted_source(tmp_path, tables)
    team = members(api, victim.owner_token)
    before = counts()

    dry = run("--sqlite", str(path), "--dry-run")

    lines = dry.splitlines()
    for line in (
        f"  users: user {victim.owner} (vera-again@crafted.test): already here, and not "
        "imported from this source",
        "  users: user usr_000000mallory2 (mo@victim.test): another user here already has the "
        "email 'mo@victim.test'",
        f"  memberships: membership of {victim.owner} in {theirs}: its user {victim.owner} is "
        "not this source's",
        "  memberships: membership of usr_000000mallory2 in ws_0000000mallory: its user "
        "usr_000000mallory2 is not this source's",
        f"  sessions: a session of {victim.owner}: its user {victim.owner} is not this source's",
        f"  sessions: a session of {MALLORY}: already here, and not imported from this source",
        "  runtimes: runtime rt_0000000mallory: another runtime here already has its token",
        "  join tokens: join token jt_0000000mallory: another join token here already has its "
        "token",
        f"  audit events: audit event {signup_event.id}: already here, and not imported from "
        "this source",
    ):
        assert line in lines
    assert counts() == before
    assert_no_secret(dry, planted, victim.owner_token, victim.join_secret, victim.runtime_token)

    message, report = refused("--sqlite", str(path))

    assert "refused: 9 rows of the source collide" in message
    assert_no_secret(message + report, planted, victim.owner_token, victim.join_secret)
    assert counts() == before
    assert api.get("/v1/auth/me", **bearer(planted)).status_code == 401
    assert api.get("/v1/auth/me", **bearer(crafted.session_token)).status_code == 401
    me = api.get("/v1/auth/me", **bearer(victim.owner_token)).json()["user"]
    assert (me["id"], me["email"], me["workspace_id"], me["role"]) == (
        victim.owner,
        "vera@victim.test",
        victim.workspace,
        "Owner",
    )
    bad = {"email": "vera@victim.test", "password": MALLORY_PASSWORD}
    assert api.post("/v1/auth/login", bad).status_code == 401
    beat = api.post(
        "/v1/cloud/runtimes/heartbeat", {"status": "idle"}, **bearer(victim.runtime_token)
    )
    assert beat.json()["runtime"]["id"] == victim.runtime
    assert JoinToken.objects.get(token_hash=sha256_hex(victim.join_secret)).workspace_id == (
        victim.workspace
    )
    assert members(api, victim.owner_token) == team


def test_another_source_with_the_same_ids_collides_and_the_same_source_stays_idempotent(
    api, source, tmp_path
):
    path, original = source
    run("--sqlite", str(path))
    maya = login(api, "maya@acme.io", original.passwords["maya@acme.io"])
    team = members(api, maya)
    # A copy of the same rows under another key (so without the provider secrets it
    # cannot open), with Mallory added as an Owner of Acme.
    tables, _ = original_db.rows(datetime.now(UTC))
    tables["provider_credentials"] = []
    mallory, crafted = original_db.crafted_rows(ACME)
    tables["users"] += mallory["users"]
    tables["sessions"] += mallory["sessions"]
    copy = crafted_source(tmp_path, tables)
    before = counts()

    message, report = refused("--sqlite", str(copy))

    assert f"workspace {ACME}: already here, and not imported from this source" in report
    assert f"user {MAYA} (maya@acme.io): already here, and not imported from this source" in (
        report
    )
    assert f"membership of {MALLORY} in {ACME}: its workspace {ACME} is not this source's" in (
        report
    )
    assert (
        table_line(report, "users") == "users 1 created, 0 unchanged, 0 kept, 0 skipped, 3 collided"
    )
    assert "refused:" in message
    assert counts() == before
    assert api.get("/v1/auth/me", **bearer(crafted.session_token)).status_code == 401
    assert members(api, maya) == team

    again = run("--sqlite", str(path))  # the same source, with its own key: its own rows

    for table in TABLES:  # Maya's password was re-hashed at sign-in: her row is kept
        assert " 0 created, " in table_line(again, table)
        assert table_line(again, table).endswith(" 0 skipped, 0 collided")
    assert "users 0 created, 2 unchanged, 1 kept" in table_line(again, "users")
    assert counts() == before
    assert api.get("/v1/auth/me", **bearer(original.session_token)).status_code == 200


def test_a_reimport_adds_what_the_original_made_since_and_not_what_was_removed_here(api, source):
    path, original = source
    run("--sqlite", str(path))
    maya = login(api, "maya@acme.io", original.passwords["maya@acme.io"])
    removed = api.delete("/v1/cloud/runtimes/rt_00000000000acme", **bearer(maya))
    assert removed.status_code == 200, removed.content
    nina_token = "cd" * 32
    with sqlite3.connect(path) as connection:  # the original lives on: Nina joins Acme
        connection.execute(
            "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                "usr_00000000000nina",
                ACME,
                "Nina Roe",
                "nina@acme.io",
                go_password_hash("nina's own password"),
                "Member",
                "2026-01-01T00:00:00Z",
            ),
        )
        connection.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?)",
            (nina_token, "usr_00000000000nina", "2026-01-01T00:00:00Z", "2999-01-01T00:00:00Z"),
        )

    again = run("--sqlite", str(path))

    assert (
        table_line(again, "users") == "users 1 created, 2 unchanged, 1 kept, 0 skipped, 0 collided"
    )
    assert table_line(again, "memberships").startswith("memberships 1 created, 3 unchanged")
    assert table_line(again, "sessions").startswith("sessions 1 created, 2 unchanged")
    assert table_line(again, "runtimes") == (
        "runtimes 0 created, 1 unchanged, 1 kept, 0 skipped, 0 collided"
    )
    assert "1 runtimes imported before and removed here since (not imported)" in again
    assert not Runtime.objects.filter(pk="rt_00000000000acme").exists()
    beat = api.post(
        "/v1/cloud/runtimes/heartbeat", {"status": "idle"}, **bearer(original.runtime_token)
    )
    assert beat.status_code == 401  # the removed runtime's token stays dead
    assert api.get("/v1/auth/me", **bearer(nina_token)).json()["user"]["workspace_id"] == ACME
    assert [email for _, email, _ in members(api, maya)] == [
        "lee@acme.io",
        "maya@acme.io",
        "nina@acme.io",
    ]


def test_the_key_is_needed_even_without_provider_credentials(source, tmp_path):
    path, _ = source
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM provider_credentials")
    (tmp_path / "secret.key").unlink()

    with pytest.raises(CommandError, match="it names the source") as failure:
        run("--sqlite", str(path), "--dry-run")

    assert str(tmp_path / "secret.key") in str(failure.value)
    assert User.objects.count() == 0


def test_a_crafted_source_cannot_take_the_id_of_a_workspace_removed_here(api, tmp_path):
    """A workspace deleted here (the Django admin) leaves its audit trail: a source that
    reuses its id must not get a fresh workspace of that id and read the old trail."""
    victim = victim_here(api)
    trail = set(
        AuditEvent.objects.filter(workspace_id=victim.workspace).values_list("pk", flat=True)
    )
    assert trail
    Workspace.objects.filter(pk=victim.workspace).delete()
    assert AuditEvent.objects.filter(workspace_id=victim.workspace).count() == len(trail)
    tables, _crafted = original_db.crafted_rows(victim.workspace)
    path = crafted_source(tmp_path, tables)

    message, _report = refused("--sqlite", str(path))

    assert (
        f"workspace {victim.workspace}: the id of a workspace removed here, whose audit "
        "history remains" in message
    )
    assert not Workspace.objects.filter(pk=victim.workspace).exists()
    assert not User.objects.filter(pk=MALLORY).exists()
