"""The audit log: each workspace sees only its own events, newest first; the hash chain
verifies and catches an edited or removed row; the ORM refuses to change rows."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.audit import audit_record, audit_verify
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
