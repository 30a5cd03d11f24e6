"""``manage.py import_original --postgres``: the original's tables in a PostgreSQL schema.

Runs when our own database is PostgreSQL: the original's rows (``tests/original_db.py``)
go into the schema ``matrixcloud`` of the test database, the original's default
``MATRIXCLOUD_DB_SCHEMA``, and are imported into our tables of the same database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.audit import audit_verify
from accounts.models import AuditEvent, Membership, ProviderCredential, SessionToken, User
from accounts.principals import Actor
from accounts.services.providers import provider_secret_read
from models_registry.models import ModelInstallation, ModelProfile
from runtimes.models import JoinToken, Runtime
from tests import original_db
from tests.factories import bearer
from tests.matrixcloud.test_import_original import (
    assert_locked_out,
    assert_no_secret,
    counts,
    members,
    refused,
    victim_here,
)
from tests.original_db import ACME, CRAFTED_KEY_HEX, KEY_HEX, MALLORY, MAYA, Original

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="our database is not PostgreSQL"),
]
SCHEMA = "matrixcloud"
CRAFTED_SCHEMA = "crafted"


def database_url() -> str:
    settings = connection.settings_dict
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    return (
        f"postgresql://{settings['USER']}{password}@{settings['HOST'] or '127.0.0.1'}"
        f":{settings['PORT'] or 5432}/{settings['NAME']}"
    )


@pytest.fixture
def source(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Original]]:
    """The original's tables in the schema ``matrixcloud``; its key in the environment."""
    monkeypatch.delenv("MATRIXCLOUD_SECRET_KEY", raising=False)
    monkeypatch.setenv("MATRIXCLOUD_ORIGINAL_SECRET_KEY", KEY_HEX)
    url = database_url()
    original = original_db.build_postgres(url, SCHEMA)
    yield url, original
    original_db.drop_postgres(url, SCHEMA)


@pytest.fixture
def crafted_schema() -> Iterator[str]:
    """A schema for a crafted source, dropped after the test."""
    yield CRAFTED_SCHEMA
    original_db.drop_postgres(database_url(), CRAFTED_SCHEMA)


def run(*args: str) -> str:
    out = StringIO()
    call_command("import_original", *args, stdout=out)
    return out.getvalue()


def summary(output: str, table: str) -> str:
    line = next(line for line in output.splitlines() if line.strip().startswith(table + " "))
    return " ".join(line.split())


def test_import_from_a_postgres_schema_twice_then_sign_in(api: Any, source):
    url, original = source
    first = run("--postgres", url, "--schema", SCHEMA)
    assert summary(first, "users") == "users 3 created, 0 unchanged, 0 kept, 0 skipped, 0 collided"
    assert f"(schema {SCHEMA})" in first
    rows = (User.objects.count(), Runtime.objects.count(), AuditEvent.objects.count())

    second = run("--postgres", url)  # the schema defaults to matrixcloud, as the original's

    assert (User.objects.count(), Runtime.objects.count(), AuditEvent.objects.count()) == rows
    for table in ("users", "runtimes", "join tokens", "provider credentials", "audit events"):
        assert " 0 created," in summary(second, table)
        assert summary(second, table).endswith(" 0 kept, 0 skipped, 0 collided")

    response = api.post(
        "/v1/auth/login",
        {"email": "maya@acme.io", "password": original.passwords["maya@acme.io"]},
    )
    assert response.status_code == 200, response.content
    token = response.json()["token"]
    assert response.json()["user"]["workspace_id"] == ACME
    assert User.objects.get(pk=MAYA).password.startswith("argon2")
    profiles = api.get("/v1/model-profiles", **bearer(token)).json()["profiles"]
    assert {p["id"] for p in profiles} == set(
        ModelProfile.objects.filter(workspace_id=ACME).values_list("pk", flat=True)
    )
    installations = api.get("/v1/model-installations", **bearer(token)).json()["installations"]
    assert len(installations) == ModelInstallation.objects.filter(workspace_id=ACME).count() == 2
    runtimes = api.get("/v1/cloud/runtimes", **bearer(token)).json()["runtimes"]
    assert [r["id"] for r in runtimes] == ["rt_00000000000acme"]
    providers = api.get("/v1/cloud/providers", **bearer(token)).json()["providers"]
    assert {p["provider"] for p in providers} == {"huggingface", "openai"}
    assert (
        provider_secret_read(
            actor=Actor.job_creator(ACME, None), provider="openai", label="work", purpose="test"
        )
        == original.provider_secrets[(ACME, "openai", "work")]
    )
    assert api.get("/v1/auth/me", **bearer(original.session_token)).status_code == 200
    assert JoinToken.objects.filter(workspace_id=ACME).count() == 2
    imported = list(AuditEvent.objects.filter(id__in=original.audit_ids).order_by("seq"))
    assert [e.id for e in imported] == original.audit_ids
    assert audit_verify().ok


def test_dry_run_and_a_wrong_key_write_nothing(source, monkeypatch):
    url, _ = source
    before = (User.objects.count(), ProviderCredential.objects.count(), AuditEvent.objects.count())

    output = run("--postgres", url, "--dry-run")
    assert "dry run: nothing was written" in output
    monkeypatch.setenv("MATRIXCLOUD_ORIGINAL_SECRET_KEY", "22" * 32)
    with pytest.raises(CommandError, match="MATRIXCLOUD_ORIGINAL_SECRET_KEY does not open"):
        run("--postgres", url)

    after = (User.objects.count(), ProviderCredential.objects.count(), AuditEvent.objects.count())
    assert after == before
    assert SessionToken.objects.count() == 0


def test_a_schema_without_the_originals_tables_is_refused(source):
    url, _ = source
    with pytest.raises(CommandError, match="has no schema 'elsewhere' with tables in it"):
        run("--postgres", url, "--schema", "elsewhere")
    assert User.objects.count() == 0


def test_a_crafted_postgres_source_cannot_take_over_a_workspace_here(
    api: Any, crafted_schema, monkeypatch
):
    victim = victim_here(api)
    tables, crafted = original_db.crafted_rows(victim.workspace)
    url = database_url()
    original_db.write_postgres(url, crafted_schema, tables)
    monkeypatch.setenv("MATRIXCLOUD_ORIGINAL_SECRET_KEY", CRAFTED_KEY_HEX)  # the crafter's key
    team = members(api, victim.owner_token)
    before = counts()

    dry = run("--postgres", url, "--schema", crafted_schema, "--dry-run")

    ws = victim.workspace
    assert f"  workspaces: workspace {ws}: already here, and not imported from this source" in (
        dry.splitlines()
    )
    assert f"membership of {MALLORY} in {ws}: its workspace {ws} is not this source's" in dry
    assert (
        summary(dry, "sessions") == "sessions 0 created, 0 unchanged, 0 kept, 0 skipped, 1 collided"
    )
    assert "collisions: 10 rows would join or take over rows here" in dry
    secrets = (crafted.session_token, crafted.join_secret, crafted.runtime_token)
    assert_no_secret(dry, *secrets, crafted.provider_secret)
    assert counts() == before

    message, report = refused("--postgres", url, "--schema", crafted_schema)

    assert "refused: 10 rows of the source collide with rows here" in message
    assert report.rstrip().endswith("import refused: nothing was written")
    assert_no_secret(message + report, *secrets, crafted.provider_secret)
    assert counts() == before
    assert not Membership.objects.filter(user_id=MALLORY).exists()
    assert audit_verify().ok
    assert_locked_out(api, crafted, victim)
    assert members(api, victim.owner_token) == team


def test_another_postgres_source_with_the_same_ids_collides_and_a_reimport_does_not(
    api: Any, source, crafted_schema, monkeypatch
):
    url, original = source
    run("--postgres", url)
    before = counts()
    tables, _ = original_db.rows(datetime.now(UTC))  # the same ids under another key
    tables["provider_credentials"] = []
    original_db.write_postgres(url, crafted_schema, tables)
    monkeypatch.setenv("MATRIXCLOUD_ORIGINAL_SECRET_KEY", CRAFTED_KEY_HEX)

    message, report = refused("--postgres", url, "--schema", crafted_schema)

    assert f"workspace {ACME}: already here, and not imported from this source" in message
    assert summary(report, "users") == "users 0 created, 0 unchanged, 0 kept, 0 skipped, 3 collided"
    assert counts() == before
    monkeypatch.setenv("MATRIXCLOUD_ORIGINAL_SECRET_KEY", KEY_HEX)

    again = run("--postgres", url)

    for table in ("workspaces", "users", "memberships", "sessions", "runtimes", "audit events"):
        assert summary(again, table).endswith(" 0 kept, 0 skipped, 0 collided"), table
        assert " 0 created," in summary(again, table)
    assert counts() == before
    assert api.get("/v1/auth/me", **bearer(original.session_token)).status_code == 200
