"""/v1/cloud/audit pages newest first (limit, cursor, next_cursor) without repeating or
skipping a row, and ``manage.py audit_verify`` names the first broken row."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command, execute_from_command_line
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.audit import audit_record
from accounts.models import AuditEvent
from tests import factories
from tests.factories import bearer, error, issue

pytestmark = pytest.mark.django_db

cast = factories.cast
AUDIT = "/v1/cloud/audit"


def page(api: Any, token: str, query: str = "") -> Any:
    return api.get(f"{AUDIT}{query}", **bearer(token))


def record(cast: Any, n: int) -> None:
    for i in range(n):
        audit_record(action="test.event", actor="tester", workspace=cast.workspace, meta={"i": i})


def test_pages_walk_the_log_newest_first_without_gaps_or_repeats(api, cast):
    record(cast, 23)
    token = issue(cast.owner)
    expected = list(
        AuditEvent.objects.filter(workspace=cast.workspace)
        .order_by("-seq")
        .values_list("id", flat=True)
    )
    seen: list[str] = []
    cursor = ""
    for _ in range(20):  # bounded: 28 events in pages of 7
        body = page(api, token, f"?limit=7&cursor={cursor}").json()
        assert set(body) == {"events", "next_cursor"}
        assert len(body["events"]) <= 7
        seen += [event["id"] for event in body["events"]]
        if body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]
        record(cast, 1)  # newer events do not shift the pages being read
    assert seen == expected
    assert len(seen) == 23 + 5  # the cast's signup, two invitations, two joins


def test_the_default_page_is_the_newest_200(api, cast):
    record(cast, 205)
    body = page(api, issue(cast.owner)).json()
    assert len(body["events"]) == 200
    assert body["events"][0]["meta"] == {"i": 204}
    assert body["next_cursor"] is not None
    rest = page(api, issue(cast.owner), f"?cursor={body['next_cursor']}").json()
    assert rest["next_cursor"] is None
    total = AuditEvent.objects.filter(workspace=cast.workspace).count()
    assert len(rest["events"]) == total - 200
    assert rest["events"][-1]["action"] == "user.signup"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?limit=0", "limit must be between 1 and 200"),
        ("?limit=201", "limit must be between 1 and 200"),
        ("?limit=ten", "limit must be between 1 and 200"),
        ("?cursor=abc", "invalid cursor"),
        ("?cursor=-5", "invalid cursor"),
    ],
)
def test_bad_paging_is_a_400(api, cast, query, message):
    response = page(api, issue(cast.owner), query)
    assert response.status_code == 400
    assert response.json() == error(message, 400)


def test_a_cursor_never_reaches_into_another_workspace(api, cast):
    audit_record(action="test.theirs", actor="x", workspace=cast.other_workspace)
    newest = AuditEvent.objects.order_by("-seq").first()
    body = page(api, issue(cast.owner), f"?cursor={newest.seq + 1}").json()
    assert {event["workspace_id"] for event in body["events"]} == {cast.workspace.pk}
    assert "test.theirs" not in {event["action"] for event in body["events"]}


def test_a_page_keeps_a_query_budget(api, cast):
    token = issue(cast.owner)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            page(api, token, "?limit=50")
        return len(captured)

    before = queries()
    record(cast, 40)
    assert queries() == before


# --- audit_verify ---------------------------------------------------------------------------


def test_audit_verify_names_the_tampered_row(cast):
    record(cast, 5)
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert f"audit chain intact: {AuditEvent.objects.count()} events" in out.getvalue()
    victim = AuditEvent.objects.filter(action="test.event").order_by("seq")[2]
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_auditevent SET meta = %s WHERE seq = %s", ['{"i": 99}', victim.seq]
        )

    with pytest.raises(CommandError) as raised:
        call_command("audit_verify")

    message = str(raised.value)
    assert f"row {victim.id} (seq {victim.seq})" in message
    assert "content does not match its hash (row edited?)" in message


def test_audit_verify_exits_non_zero_naming_the_row(cast, capsys):
    """As an operator runs it (``manage.py audit_verify``): exit status 1, the row on stderr."""
    record(cast, 2)
    victim = AuditEvent.objects.filter(action="test.event").order_by("seq").first()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_auditevent SET actor = %s WHERE seq = %s", ["forged", victim.seq]
        )

    with pytest.raises(SystemExit) as exited:
        execute_from_command_line(["manage.py", "audit_verify"])

    assert exited.value.code == 1
    stderr = capsys.readouterr().err
    assert f"audit chain broken at row {victim.id} (seq {victim.seq})" in stderr
