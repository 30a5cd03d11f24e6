"""``manage.py import_original --postgres``: the original's tables in a PostgreSQL schema.

Runs when our own database is PostgreSQL: the original's rows (``tests/original_db.py``)
go into the schema ``matrixcloud`` of the test database, the original's default
``MATRIXCLOUD_DB_SCHEMA``, and are imported into our tables of the same database.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.audit import audit_verify
from accounts.models import AuditEvent, ProviderCredential, SessionToken, User
from accounts.services.providers import provider_secret_read
from models_registry.models import ModelInstallation, ModelProfile
from runtimes.models import JoinToken, Runtime
from tests import original_db
from tests.factories import bearer
from tests.original_db import ACME, KEY_HEX, MAYA, Original

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="our database is not PostgreSQL"),
]
SCHEMA = "matrixcloud"


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
    assert summary(first, "users") == "users 3 created, 0 unchanged, 0 kept, 0 skipped"
    assert f"(schema {SCHEMA})" in first
    rows = (User.objects.count(), Runtime.objects.count(), AuditEvent.objects.count())

    second = run("--postgres", url)  # the schema defaults to matrixcloud, as the original's

    assert (User.objects.count(), Runtime.objects.count(), AuditEvent.objects.count()) == rows
    for table in ("users", "runtimes", "join tokens", "provider credentials", "audit events"):
        assert " 0 created," in summary(second, table)
        assert summary(second, table).endswith(" 0 kept, 0 skipped")

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
        provider_secret_read(workspace=ACME, provider="openai", label="work", purpose="test")
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
