"""Provider credentials: the API (the original's checklist, docs/COMPATIBILITY.md#c-13;
hints only, upsert returns the stored row: #f-05; delete, tenancy), the one audited read
path, encryption at rest (no plaintext in the column, a wrong key raises), and the
admin."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.contrib.admin.utils import quote
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import AuditEvent, ProviderCredential, User
from accounts.principals import Actor
from accounts.services.providers import (
    SecretUnreadable,
    credential_hint,
    provider_secret_read,
    provider_upsert,
    secret_name_parse,
)
from matrixcloud.lib import crypto
from sandbox.secrets import resolve_secret
from tests import factories
from tests.factories import actor_of, bearer, error, issue

pytestmark = pytest.mark.django_db

cast = factories.cast
PROVIDERS = "/v1/cloud/providers"
HF_SECRET = "hf_live_9f8e7d6c5b4a39281706"
PUBLIC_KEYS = {
    "id", "provider", "label", "hint", "meta", "usable_by_members", "created_at", "updated_at",
}  # fmt: skip


def store(api: Any, token: str, **body: Any) -> Any:
    return api.post(
        PROVIDERS, {"provider": "huggingface", "secret": HF_SECRET, **body}, **bearer(token)
    )


def listed(api: Any, token: str) -> list[dict[str, Any]]:
    response = api.get(PROVIDERS, **bearer(token))
    assert response.status_code == 200
    return response.json()["providers"]


def raw_secret(credential_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT secret FROM accounts_providercredential WHERE id = %s", [credential_id]
        )
        return cursor.fetchone()[0]


def save(workspace: Any, provider: str = "huggingface", secret: str = HF_SECRET, **kw: Any) -> Any:
    return provider_upsert(provider=provider, secret=secret, actor=actor_of(workspace), **kw)


# --- POST / GET /v1/cloud/providers -----------------------------------------------------


def test_an_owner_stores_a_credential_and_sees_only_its_hint(api, cast):  # T19, T20
    token = issue(cast.owner)
    response = store(api, token, label="primary", meta={"org": "acme"})

    assert response.status_code == 201, response.content
    provider = response.json()["provider"]
    assert set(provider) == PUBLIC_KEYS
    stored = ProviderCredential.objects.get()
    assert provider == {
        **provider,
        "id": stored.pk,
        "provider": "huggingface",
        "label": "primary",
        "hint": "••••1706",
        "meta": {"org": "acme"},
    }
    assert provider["id"].startswith("pc_")
    assert provider["created_at"] == stored.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert HF_SECRET not in response.content.decode()

    providers = listed(api, token)
    assert len(providers) == 1
    assert providers[0] == provider
    assert providers[0]["hint"]
    assert providers[0]["hint"] != HF_SECRET
    assert "secret" not in providers[0]


def test_storing_again_replaces_the_secret_and_returns_the_stored_row(api, cast):
    token = issue(cast.owner)
    first = store(api, token).json()["provider"]
    second = store(api, token, secret="hf_rotated_value_4242", meta={"v": 2}).json()["provider"]

    assert second["id"] == first["id"]  # docs/COMPATIBILITY.md#f-05
    assert second["created_at"] == first["created_at"]
    assert second["hint"] == "••••4242"
    assert second["meta"] == {"v": 2}
    assert ProviderCredential.objects.count() == 1
    read = provider_secret_read(
        actor=Actor.system(cast.workspace), provider="huggingface", purpose="test"
    )
    assert read == "hf_rotated_value_4242"
    actions = list(
        AuditEvent.objects.filter(action__startswith="provider.credential.")
        .order_by("seq")
        .values_list("action", "actor", "target", "meta")
    )
    assert actions[:2] == [
        ("provider.credential.added", cast.owner.pk, "huggingface",
         {"label": "default", "hint": first["hint"], "id": first["id"],
          "usable_by_members": False}),
        ("provider.credential.updated", cast.owner.pk, "huggingface",
         {"label": "default", "hint": "••••4242", "id": first["id"],
          "usable_by_members": False}),
    ]  # fmt: skip


def test_labels_and_providers_are_separate_credentials_listed_by_provider(api, cast):
    token = issue(cast.admin)
    for provider, label in [("openai", "default"), ("huggingface", "work"), ("HuggingFace", "")]:
        assert store(api, token, provider=provider, label=label).status_code == 201
    assert [(p["provider"], p["label"]) for p in listed(api, token)] == [
        ("huggingface", "default"),
        ("huggingface", "work"),
        ("openai", "default"),
    ]


def test_short_secrets_show_only_the_mask():
    assert credential_hint("abc") == "••••"
    assert credential_hint("abcdefg") == "••••"
    assert credential_hint("abcdefgh") == "••••efgh"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"provider": "", "secret": "x" * 10}, "provider and secret are required"),
        ({"provider": "huggingface", "secret": ""}, "provider and secret are required"),
        ({"provider": "  ", "secret": "x" * 10}, "provider and secret are required"),
        ({"provider": "hugging face", "secret": "x" * 10}, "provider must be 1-64 characters of "
         "a-z, 0-9, '.', '_' or '-' (e.g. huggingface)"),
        ({"provider": "openai", "label": "a/b", "secret": "x" * 10}, "label must be 1-64 "
         "characters of letters, digits, '.', '_' or '-'"),
        ({"provider": "openai", "secret": "x" * 16_385}, "secret must be at most 16384 "
         "characters, without NUL"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_and_nothing_is_stored(api, cast, body, message):
    response = api.post(PROVIDERS, body, **bearer(issue(cast.owner)))
    assert response.status_code == 400
    assert response.json() == error(message, 400)
    assert not ProviderCredential.objects.exists()


def test_missing_fields_and_malformed_json_are_400s(api, cast):
    token = issue(cast.owner)
    missing = api.post(PROVIDERS, {"provider": "openai"}, **bearer(token))
    assert missing.json() == error("secret: This field is required.", 400)
    broken = api.generic("POST", PROVIDERS, '{"provider": ', content_type="application/json",
                         **bearer(token))  # fmt: skip
    assert broken.status_code == 400
    assert broken.json()["error"].startswith("invalid JSON body")


def test_members_may_list_but_not_store(api, cast):
    save(cast.workspace)
    token = issue(cast.member)
    response = store(api, token, provider="openai")
    assert response.status_code == 403
    assert response.json() == error(
        "only a workspace Owner or Admin may store provider credentials", 403
    )
    assert [p["provider"] for p in listed(api, token)] == ["huggingface"]


def test_workspaces_never_see_each_others_credentials(api, cast):
    save(cast.workspace)
    save(cast.other_workspace, provider="openai", secret="sk-outsider-key-000")
    assert [p["provider"] for p in listed(api, issue(cast.outsider))] == ["openai"]
    assert [p["provider"] for p in listed(api, issue(cast.owner))] == ["huggingface"]
    assert (
        provider_secret_read(actor=Actor.system(cast.workspace), provider="openai", purpose="t")
        is None
    )


def test_providers_need_a_session(api, settings):
    settings.MATRIX_API_TOKEN = "operator-token-for-provider-tests-0123"
    for response in (api.get(PROVIDERS), api.post(PROVIDERS, {"provider": "a", "secret": "b"})):
        assert response.status_code == 401
        assert response.json() == error("authentication required", 401)


def test_wrong_methods_are_405s(api, cast):
    token = issue(cast.owner)
    assert api.put(PROVIDERS, {}, **bearer(token)).status_code == 405
    assert api.post(f"{PROVIDERS}/pc_0123456789abcdef", {}, **bearer(token)).status_code == 405


def test_the_list_keeps_a_query_budget_and_never_decrypts(api, cast, settings, tmp_path):
    token = issue(cast.owner)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            listed(api, token)
        return len(captured)

    save(cast.workspace)
    before = queries()
    for n in range(10):
        save(cast.workspace, provider=f"p{n}")
    assert queries() == before
    # The list works even when no key opens the secrets: it never reads them.
    other = tmp_path / "other.key"
    other.write_text("ab" * 32)
    settings.MATRIX_ENCRYPTION_KEYFILE = other
    assert len(listed(api, token)) == 11


def test_signup_and_a_stored_credential_are_in_the_audit_log(api, cast):  # T22
    token = issue(cast.owner)
    store(api, token)
    actions = {
        event["action"] for event in api.get("/v1/cloud/audit", **bearer(token)).json()["events"]
    }
    assert {"user.signup", "provider.credential.added"} <= actions
    assert HF_SECRET not in repr(list(AuditEvent.objects.values()))


# --- DELETE /v1/cloud/providers/{id} ------------------------------------------------------


def test_an_owner_deletes_a_credential(api, cast):
    credential = save(cast.workspace)
    token = issue(cast.owner)
    response = api.delete(f"{PROVIDERS}/{credential.pk}", **bearer(token))
    assert response.status_code == 204
    assert not ProviderCredential.objects.exists()
    event = AuditEvent.objects.filter(action="provider.credential.deleted").get()
    assert (event.actor, event.target, event.meta["id"]) == (
        cast.owner.pk,
        "huggingface",
        credential.pk,
    )
    again = api.delete(f"{PROVIDERS}/{credential.pk}", **bearer(token))
    assert again.json() == error("provider credential not found", 404)


def test_another_workspaces_credential_is_a_404(api, cast):
    theirs = save(cast.other_workspace)
    response = api.delete(f"{PROVIDERS}/{theirs.pk}", **bearer(issue(cast.owner)))
    assert response.status_code == 404
    assert response.json() == error("provider credential not found", 404)
    assert ProviderCredential.objects.filter(pk=theirs.pk).exists()
    assert not AuditEvent.objects.filter(action="provider.credential.deleted").exists()


def test_members_may_not_delete(api, cast):
    credential = save(cast.workspace)
    response = api.delete(f"{PROVIDERS}/{credential.pk}", **bearer(issue(cast.member)))
    assert response.status_code == 403
    assert ProviderCredential.objects.filter(pk=credential.pk).exists()


# --- the one read path --------------------------------------------------------------------


def test_a_read_returns_the_plaintext_and_is_audited_without_it(cast):
    save(cast.workspace, label="ci")
    value = provider_secret_read(
        actor=Actor.system(cast.workspace, name="usr_x"),
        provider="HuggingFace",
        label="ci",
        purpose="hf",
    )
    assert value == HF_SECRET
    event = AuditEvent.objects.filter(action="provider.credential.read").get()
    assert (event.actor, event.target, event.status, event.workspace_id) == (
        "usr_x", "huggingface", "success", cast.workspace.pk,
    )  # fmt: skip
    assert event.meta == {"label": "ci", "purpose": "hf", "id": ProviderCredential.objects.get().pk}
    assert HF_SECRET not in repr(event.meta)


def test_reading_what_is_not_there_is_none_and_not_audited(cast):
    save(cast.workspace)
    for provider, label in [("openai", "default"), ("huggingface", "other"), ("bad name!", "x")]:
        assert (
            provider_secret_read(
                actor=Actor.system(cast.workspace), provider=provider, label=label, purpose="t"
            )
            is None
        )
    assert not AuditEvent.objects.filter(action="provider.credential.read").exists()


def test_sandbox_secret_names_map_to_provider_and_label(cast):
    save(cast.workspace, secret="default-secret-1111")
    save(cast.workspace, label="work", secret="work-secret-2222")
    assert secret_name_parse("huggingface") == ("huggingface", "default")
    assert secret_name_parse("openai/work") == ("openai", "work")
    assert resolve_secret(Actor.system(cast.workspace), "huggingface") == "default-secret-1111"
    assert resolve_secret(Actor.system(cast.workspace), "HuggingFace/work") == "work-secret-2222"
    assert resolve_secret(Actor.system(cast.workspace), "huggingface/nope") is None
    assert resolve_secret(Actor.system(cast.other_workspace), "huggingface") is None
    purposes = set(
        AuditEvent.objects.filter(action="provider.credential.read").values_list(
            "meta__purpose", flat=True
        )
    )
    assert purposes == {"sandbox.env"}


# --- encryption at rest -------------------------------------------------------------------


def test_the_column_holds_no_plaintext(cast):
    credential = save(cast.workspace)
    stored = raw_secret(credential.pk)
    assert HF_SECRET not in stored
    assert HF_SECRET[-8:] not in stored
    prefix, kid, token = stored.split(":", 2)
    assert (prefix, kid) == ("mxe1", crypto.key_ring().primary_id)
    assert token.startswith("gAAAA")  # a Fernet token
    again = save(cast.workspace)
    assert raw_secret(again.pk) != stored  # every encryption differs (random IV)


def test_a_wrong_key_raises_and_never_returns_ciphertext(cast, settings, tmp_path):
    credential = save(cast.workspace)
    stored = raw_secret(credential.pk)
    wrong = tmp_path / "wrong.key"
    wrong.write_text("cd" * 32 + "\n")
    settings.MATRIX_ENCRYPTION_KEYFILE = wrong

    with pytest.raises(crypto.KeyUnavailable):
        crypto.decrypt(stored)
    with pytest.raises(crypto.InvalidToken):
        ProviderCredential.objects.get(pk=credential.pk)  # loading decrypts
    with pytest.raises(
        SecretUnreadable, match="the huggingface/default credential cannot be decrypted"
    ):
        provider_secret_read(
            actor=Actor.system(cast.workspace), provider="huggingface", purpose="hf"
        )
    failed = AuditEvent.objects.filter(action="provider.credential.read").get()
    assert failed.status == "failure"


def test_a_tampered_or_foreign_ciphertext_raises():
    token = crypto.encrypt("value-1234")
    prefix, kid, body = token.split(":", 2)
    flipped = body[:20] + ("A" if body[20] != "A" else "B") + body[21:]
    for bad in (f"{prefix}:{kid}:{flipped}", f"{prefix}:{kid}", "garbage", ""):
        with pytest.raises(crypto.InvalidToken):
            crypto.decrypt(bad)
    assert crypto.decrypt(token) == "value-1234"


def test_tokens_without_a_key_id_still_decrypt(settings):
    key = crypto.key_ring()
    primary = crypto.parse_keys(settings.MATRIX_ENCRYPTION_KEYFILE.read_text())[0]
    legacy = Fernet(base64.urlsafe_b64encode(bytes.fromhex(primary))).encrypt(b"old").decode()
    assert crypto.ciphertext_key_id(legacy) is None
    assert crypto.decrypt(legacy) == "old"
    assert key.primary_id == crypto.key_id(primary)


def test_an_environment_key_ring_is_used_as_configured(cast, settings):
    settings.MATRIX_ENCRYPTION_KEYFILE = None
    settings.MATRIX_ENCRYPTION_KEYS = ["a passphrase, not hex", "ef" * 32]
    credential = save(cast.workspace)
    assert raw_secret(credential.pk).split(":")[1] == crypto.key_id("a passphrase, not hex")
    settings.MATRIX_ENCRYPTION_KEYS = ["ef" * 32]
    with pytest.raises(crypto.KeyUnavailable):
        ProviderCredential.objects.get(pk=credential.pk)  # loading decrypts


# --- admin --------------------------------------------------------------------------------


@pytest.fixture
def operator_client(client):
    operator = User.objects.create_superuser(email="op@example.com", password="op-password-1")
    client.force_login(operator)
    return client


def test_the_admin_shows_hints_never_secrets(operator_client, cast):
    credential = save(cast.workspace)
    stored = raw_secret(credential.pk)
    for url in (
        reverse("admin:accounts_providercredential_changelist"),
        reverse("admin:accounts_providercredential_change", args=[quote(credential.pk)]),
    ):
        response = operator_client.get(url)
        assert response.status_code == 200
        page = response.content.decode()
        assert credential.hint in page
        assert HF_SECRET not in page
        assert stored.split(":")[2][:24] not in page


def test_the_admin_deletes_through_the_audited_service(operator_client, cast):
    credential = save(cast.workspace)
    response = operator_client.post(
        reverse("admin:accounts_providercredential_changelist"),
        {"action": "delete_credentials", "_selected_action": [credential.pk]},
    )
    assert response.status_code == 302
    assert not ProviderCredential.objects.exists()
    event = AuditEvent.objects.get(action="provider.credential.deleted")
    assert event.actor.startswith("operator:")


def test_the_usage_admin_is_read_only(operator_client, cast):
    from accounts.services.usage import usage_record

    usage_record(workspace=cast.workspace, kind="tool.call", quantity=3)
    response = operator_client.get(reverse("admin:accounts_usageevent_changelist"))
    assert response.status_code == 200
    assert b"tool.call" in response.content
    assert operator_client.get(reverse("admin:accounts_usageevent_add")).status_code == 403
