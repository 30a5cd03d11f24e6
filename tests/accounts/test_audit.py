"""The audit log: each workspace sees only its own events, newest first; the hash chain
verifies and catches an edited or removed row; the ORM refuses to change rows."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.audit import AuditEntry, audit_record, audit_record_many, audit_verify
from accounts.models import AuditChainHead, AuditEvent
from tests import factories
from tests.factories import bearer, error, issue

pytestmark = pytest.mark.django_db

cast = factories.cast

EVENT_KEYS = {
    "id",
    "workspace_id",
    "actor",
    "action",
    "target",
    "ip",
    "status",
    "meta",
    "created_at",
}


def audit(api: Any, token: str, **headers: str) -> list[dict[str, Any]]:
    response = api.get("/v1/cloud/audit", **bearer(token), **headers)
    assert response.status_code == 200
    return response.json()["events"]


def raw(sql: str, params: list[Any]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


# --- GET /v1/cloud/audit ------------------------------------------------------------


def test_the_audit_log_lists_the_workspaces_events_newest_first(api, cast):
    token = issue(cast.owner)
    api.post("/v1/auth/login", {"email": "member@northwind.test", "password": "wrong guess 9"})
    api.post("/v1/auth/logout", {}, **bearer(issue(cast.admin)))

    events = audit(api, token)

    assert {event["workspace_id"] for event in events} == {cast.workspace.pk}
    assert set(events[0]) == EVENT_KEYS
    assert [e["action"] for e in events] == [
        "user.logout",
        "user.login",
        "workspace.member.joined",
        "workspace.member.invited",
        "workspace.member.joined",
        "workspace.member.invited",
        "user.signup",
    ]
    assert events[0]["actor"] == cast.admin.pk
    assert events[1] == {
        **events[1],
        "status": "failure",
        "actor": "member@northwind.test",
        "target": "member@northwind.test",
        "ip": "127.0.0.1",
    }
    stored = list(
        AuditEvent.objects.filter(workspace=cast.workspace).order_by("-seq").values_list("id")
    )
    assert [e["id"] for e in events] == [row[0] for row in stored]
    times = [e["created_at"] for e in events]
    assert times == sorted(times, reverse=True)


def test_admins_see_the_log_of_their_own_workspace(api, cast):
    events = audit(api, issue(cast.admin))
    assert events
    assert {event["workspace_id"] for event in events} == {cast.workspace.pk}


def test_members_may_not_read_the_audit_log(api, cast):
    response = api.get("/v1/cloud/audit", **bearer(issue(cast.member)))
    assert response.status_code == 403
    assert response.json() == error("only a workspace Owner or Admin may read the audit log", 403)


def test_an_outsider_never_sees_another_workspaces_events(api, cast):
    api.post("/v1/auth/login", {"email": "owner@northwind.test", "password": "wrong guess 8"})
    token = issue(cast.outsider)

    for headers in ({}, {"HTTP_X_MATRIX_WORKSPACE": cast.workspace.slug}):
        events = audit(api, token, **headers)
        assert [(e["action"], e["workspace_id"]) for e in events] == [
            ("user.signup", cast.other_workspace.pk)
        ]
        text = repr(events)
        for user in (cast.owner, cast.admin, cast.member):
            assert user.pk not in text
            assert user.email not in text


def test_failed_logins_for_unknown_emails_are_visible_to_no_workspace(api, cast):
    api.post("/v1/auth/login", {"email": "ghost@northwind.test", "password": "wrong guess 7"})
    assert AuditEvent.objects.get(actor="ghost@northwind.test").workspace_id is None
    for user in (cast.owner, cast.outsider):
        assert "ghost@northwind.test" not in repr(audit(api, issue(user)))


def test_the_audit_log_is_401_without_a_session(api, settings):
    settings.MATRIX_API_TOKEN = "operator-token-for-audit-tests-0123456"
    anonymous = api.get("/v1/cloud/audit")
    assert anonymous.status_code == 401
    assert anonymous.json() == error("authentication required", 401)
    forged = api.get("/v1/cloud/audit", **bearer("mxs_" + "5" * 64))
    assert forged.status_code == 401
    assert forged.json() == error("missing or invalid bearer token", 401)


def test_the_audit_log_is_read_only(api, cast):
    response = api.post("/v1/cloud/audit", {}, **bearer(issue(cast.owner)))
    assert response.status_code == 405
    assert response.json() == error('Method "POST" not allowed.', 405)


def test_the_audit_log_keeps_a_query_budget(api, cast):
    token = issue(cast.owner)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            audit(api, token)
        return len(captured)

    before = queries()
    for n in range(10):
        audit_record(
            action="test.event", actor=cast.owner.pk, workspace=cast.workspace, meta={"n": n}
        )
    assert queries() == before
    assert before <= 5


# --- the hash chain -----------------------------------------------------------------


def test_the_chain_verifies(cast):
    audit_record(action="test.event", actor="someone", workspace=cast.workspace)
    report = audit_verify()
    assert report.ok
    assert report.reason == "ok"
    assert report.checked == AuditEvent.objects.count() == AuditChainHead.objects.get().count
    events = list(AuditEvent.objects.order_by("seq"))
    assert all(a.hash == b.prev_hash for a, b in itertools.pairwise(events))


def test_a_batch_is_appended_in_order_under_one_lock_and_verifies(cast):
    """A host's batch of tool calls: one lock of the head, one insert, the chain whole."""
    before = AuditChainHead.objects.get().count
    audit_record(action="test.before", actor="someone", workspace=cast.workspace)
    batch = [
        AuditEntry(action="test.batch", actor=f"a{n}", workspace=cast.workspace.pk, target=f"t{n}")
        for n in range(5)
    ]
    with CaptureQueriesContext(connection) as queries:
        events = audit_record_many(batch)
    inserts = [q for q in queries if q["sql"].startswith('INSERT INTO "accounts_auditevent"')]
    locks = [
        q for q in queries if "accounts_auditchainhead" in q["sql"] and "FOR UPDATE" in q["sql"]
    ]
    assert len(inserts) == 1
    assert len(locks) == (1 if connection.features.has_select_for_update else 0)
    audit_record(action="test.after", actor="someone", workspace=cast.workspace)
    newest = list(AuditEvent.objects.order_by("-seq")[:7])[::-1]
    assert [e.action for e in newest] == ["test.before", *["test.batch"] * 5, "test.after"]
    assert [e.actor for e in newest[1:6]] == [f"a{n}" for n in range(5)]
    assert [e.id for e in events] == [e.id for e in newest[1:6]]
    assert AuditChainHead.objects.get().count == before + 7
    assert all(a.hash == b.prev_hash for a, b in itertools.pairwise(newest))
    assert audit_verify().ok
    assert audit_record_many([]) == []


def test_the_orm_refuses_to_change_or_remove_events(cast):
    event = AuditEvent.objects.filter(workspace=cast.workspace).first()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).update(target="someone else")
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    event.target = "someone else"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    assert audit_verify().ok


def test_an_edited_row_breaks_the_chain(cast):
    edited = AuditEvent.objects.filter(workspace=cast.workspace).order_by("seq")[1]
    assert audit_verify().ok

    assert (
        raw("UPDATE accounts_auditevent SET target = %s WHERE seq = %s", ["forged", edited.seq])
        == 1
    )

    report = audit_verify()
    assert not report.ok
    assert report.broken_seq == edited.seq
    assert report.reason == "content does not match its hash (row edited?)"


def test_an_edited_row_with_a_recomputed_hash_still_breaks_the_chain(cast):
    from accounts.audit import chain_hash

    rows = list(AuditEvent.objects.order_by("seq"))
    victim = rows[1]
    victim.actor = "forged"
    raw(
        "UPDATE accounts_auditevent SET actor = %s, hash = %s WHERE seq = %s",
        ["forged", chain_hash(victim.prev_hash, victim), victim.seq],
    )
    report = audit_verify()
    assert report.broken_seq == rows[2].seq
    assert report.reason == "previous hash does not match (row removed?)"


def test_a_removed_row_breaks_the_chain(cast):
    rows = list(AuditEvent.objects.order_by("seq"))
    assert len(rows) >= 3
    assert raw("DELETE FROM accounts_auditevent WHERE seq = %s", [rows[1].seq]) == 1

    report = audit_verify()
    assert report.broken_seq == rows[2].seq
    assert report.reason == "previous hash does not match (row removed?)"


def test_a_removed_newest_row_breaks_the_chain(cast):
    newest = audit_record(action="test.event", actor="someone", workspace=cast.workspace)
    assert raw("DELETE FROM accounts_auditevent WHERE seq = %s", [newest.seq]) == 1

    report = audit_verify()
    assert report.broken_seq == -1
    assert report.reason == "chain head disagrees with the rows (tail removed?)"


# --- the keyed chain: an attacker with the database but not the key ring ------------------


def rehash_the_old_way(first_seq: int, *, unkey: bool = False) -> None:
    """What someone with write access to the database does after editing a row: recompute
    every hash from that row on with plain SHA-256 (all they can compute without the key),
    and move the head to match. With ``unkey`` the rows also claim to be unkeyed legacy
    rows, and the head's legacy count is raised to cover them."""
    from accounts.audit import legacy_hash

    rows = list(AuditEvent.objects.order_by("seq"))
    index = next(n for n, row in enumerate(rows) if row.seq == first_seq)
    previous = rows[index - 1].hash if index else "0" * 64
    for row in rows[index:]:
        if unkey:
            row.hash_key = ""
        row.prev_hash, row.hash = previous, legacy_hash(previous, row)
        sql = "UPDATE accounts_auditevent SET prev_hash = %s, hash = %s, hash_key = %s"
        raw(f"{sql} WHERE seq = %s", [row.prev_hash, row.hash, row.hash_key, row.seq])
        previous = row.hash
    legacy = len(rows) if unkey else AuditChainHead.objects.get().legacy_count
    raw(
        "UPDATE accounts_auditchainhead SET last_hash = %s, count = %s, legacy_count = %s",
        [previous, len(rows), legacy],
    )


def test_an_edited_row_rehashed_without_the_key_is_caught_at_that_row(cast):
    rows = list(AuditEvent.objects.order_by("seq"))
    assert len(rows) >= 4
    assert audit_verify().ok  # the untouched chain verifies
    victim = rows[2]
    raw("UPDATE accounts_auditevent SET actor = %s WHERE seq = %s", ["forged", victim.seq])

    rehash_the_old_way(victim.seq)

    report = audit_verify()
    assert (report.broken_seq, report.broken_id) == (victim.seq, victim.id)
    assert report.reason == "content does not match its hash (row edited?)"
    assert report.checked == 2


def test_passing_forged_rows_off_as_unkeyed_legacy_rows_is_caught(cast):
    rows = list(AuditEvent.objects.order_by("seq"))
    victim = rows[1]
    raw("UPDATE accounts_auditevent SET target = %s WHERE seq = %s", ["forged", victim.seq])

    rehash_the_old_way(victim.seq, unkey=True)

    report = audit_verify()
    assert report.broken_id == victim.id
    assert report.reason == (
        "row is not keyed, but the chain was keyed before it (re-hashed without the key?)"
    )


def test_audit_verify_names_the_row_edited_and_rehashed_without_the_key(cast):
    from django.core.management import CommandError, call_command

    victim = list(AuditEvent.objects.order_by("seq"))[1]
    raw("UPDATE accounts_auditevent SET ip = %s WHERE seq = %s", ["10.6.6.6", victim.seq])
    rehash_the_old_way(victim.seq)
    with pytest.raises(CommandError, match=f"row {victim.id} \\(seq {victim.seq}\\)"):
        call_command("audit_verify")


def test_a_head_moved_over_a_cut_tail_is_caught_by_its_seal(cast):
    rows = list(AuditEvent.objects.order_by("seq"))
    raw("DELETE FROM accounts_auditevent WHERE seq = %s", [rows[-1].seq])
    raw(
        "UPDATE accounts_auditchainhead SET last_hash = %s, count = %s",
        [rows[-2].hash, len(rows) - 1],
    )
    report = audit_verify()
    assert report.broken_seq == -1
    assert report.reason == "the chain head's seal does not hold (head edited?)"


def make_legacy(rows: list[AuditEvent]) -> None:
    """Put the chain back as an installation before the keyed chain wrote it: plain
    SHA-256 hashes, no key ids, a head without legacy count or seal."""
    rehash_the_old_way(rows[0].seq, unkey=True)
    raw("UPDATE accounts_auditchainhead SET legacy_count = 0, seal = ''", [])


def seal_as_the_migration_does() -> None:
    import importlib

    from django.apps import apps

    migration = importlib.import_module("accounts.migrations.0004_audit_keyed_chain")
    migration.seal_the_legacy_chain(apps, None)


def test_an_upgraded_installation_keeps_a_verifying_chain(cast):
    rows = list(AuditEvent.objects.order_by("seq"))
    make_legacy(rows)
    assert not audit_verify().ok  # unsealed unkeyed rows: exactly what a forger would leave

    seal_as_the_migration_does()
    assert audit_verify().ok
    assert AuditChainHead.objects.get().legacy_count == len(rows)

    newest = audit_record(action="test.after-upgrade", actor="someone", workspace=cast.workspace)
    assert newest.hash_key
    assert newest.prev_hash == AuditEvent.objects.get(seq=rows[-1].seq).hash
    report = audit_verify()
    assert report.ok
    assert report.checked == len(rows) + 1


def test_an_edit_among_the_legacy_rows_is_caught_at_the_first_keyed_row(cast):
    rows = list(AuditEvent.objects.order_by("seq"))
    make_legacy(rows)
    seal_as_the_migration_does()
    first_keyed = audit_record(action="test.after-upgrade", actor="x", workspace=cast.workspace)
    audit_record(action="test.after-upgrade", actor="y", workspace=cast.workspace)

    raw("UPDATE accounts_auditevent SET actor = %s WHERE seq = %s", ["forged", rows[1].seq])
    rehash_the_old_way(rows[1].seq)  # the keyed rows too, as far as SHA-256 goes

    report = audit_verify()
    assert report.broken_id == first_keyed.id
    assert report.reason == "content does not match its hash (row edited?)"


def test_an_edit_among_the_legacy_rows_before_any_keyed_row_is_caught_at_the_head(cast):
    rows = list(AuditEvent.objects.order_by("seq"))
    make_legacy(rows)
    seal_as_the_migration_does()
    raw("UPDATE accounts_auditevent SET actor = %s WHERE seq = %s", ["forged", rows[1].seq])
    rehash_the_old_way(rows[1].seq, unkey=True)

    report = audit_verify()
    assert report.broken_seq == -1
    assert report.reason == "the chain head's seal does not hold (head edited?)"


def test_rows_signed_by_a_rotated_and_retired_key_still_verify(cast, settings, tmp_path):
    from django.core.management import call_command

    from matrixcloud.lib import crypto
    from matrixcloud.lib.keyfile import write_keys

    old_key = "1b" * 32
    keyfile = tmp_path / "secret.key"
    write_keys(keyfile, [old_key, *settings.MATRIX_ENCRYPTION_KEYS])
    settings.MATRIX_ENCRYPTION_KEYFILE = keyfile
    settings.MATRIX_DERIVED_KEYFILE = tmp_path / "derived.keys"
    signed_old = audit_record(action="test.old-key", actor="a", workspace=cast.workspace)
    assert signed_old.hash_key == crypto.key_id(old_key)

    call_command("rotate_secret_key", "--retire-old", stdout=None)
    assert crypto.key_id(old_key) not in crypto.key_ring().ids
    signed_new = audit_record(action="test.new-key", actor="b", workspace=cast.workspace)
    assert signed_new.hash_key == crypto.key_ring().primary_id != signed_old.hash_key
    assert (tmp_path / "derived.keys").stat().st_mode & 0o777 == 0o600
    assert audit_verify().ok

    # Without the kept audit keys, the old rows cannot be vouched for: said so, by row.
    (tmp_path / "derived.keys").unlink()
    report = audit_verify()
    assert not report.ok
    assert "which this installation does not have" in report.reason


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_chain_correctly() -> None:
    """Six threads append at once (the head's row lock on PostgreSQL, the file lock on
    SQLite serialise them): every row is keyed and chained, none lost."""
    import threading

    from django.db import connections

    errors: list[BaseException] = []
    gate = threading.Barrier(6, timeout=60)

    def append(worker: int) -> None:
        try:
            gate.wait()  # all at once: real concurrent appends, each on its own connection
            for n in range(10):
                audit_record(action="test.concurrent", actor=f"w{worker}", meta={"n": n})
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=append, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)
    report = audit_verify()
    assert report.ok, report
    assert AuditEvent.objects.filter(action="test.concurrent").count() == 60
    assert report.checked == AuditChainHead.objects.get().count
