"""Join-token redemption is atomic: 20 registrations at once with a 5-use token give
exactly 5 runtimes, through the service and through the HTTP view, on real threads
(each with its own database connection: real concurrent transactions on PostgreSQL,
the file database's write lock on SQLite)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connections
from rest_framework.test import APIClient

from accounts.models import AuditEvent
from accounts.services import user_signup
from matrixcloud.errors import Unauthorized
from runtimes.models import JoinToken, Runtime
from runtimes.services import join_token_issue, runtime_register
from tests.factories import actor_of

pytestmark = pytest.mark.django_db(transaction=True)

CALLERS = 20
USES = 5
BOUND = 60.0


def owner_workspace() -> Any:
    issued = user_signup(
        name="Rita Racer",
        email="rita@race.test",
        password="starting gun 4242",
        workspace_name="Race",
    )
    return issued.membership


def race(attempt: Callable[[int], str]) -> Counter[str]:
    """Run ``attempt`` on CALLERS threads released together; count the outcomes."""
    gate = threading.Barrier(CALLERS, timeout=BOUND)

    def one(n: int) -> str:
        try:
            gate.wait()
            return attempt(n)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        futures = [pool.submit(one, n) for n in range(CALLERS)]
        return Counter(future.result(timeout=BOUND) for future in futures)


def test_twenty_concurrent_registrations_with_a_five_use_token_register_five():
    membership = owner_workspace()
    minted = join_token_issue(
        max_uses=USES, actor=actor_of(membership.workspace, name=str(membership.user.pk))
    )

    def attempt(n: int) -> str:
        try:
            runtime_register(join_token=minted.secret, name=f"racer-{n}")
        except Unauthorized as refused:
            return refused.message
        return "registered"

    outcomes = race(attempt)

    assert outcomes == Counter({"registered": USES, "join token already used": CALLERS - USES})
    assert Runtime.objects.filter(workspace=membership.workspace).count() == USES
    assert JoinToken.objects.get(pk=minted.token.pk).uses == USES
    audited = Counter(
        AuditEvent.objects.filter(action="runtime.join_token.redeemed").values_list(
            "status", flat=True
        )
    )
    assert audited == Counter({"success": USES, "failure": CALLERS - USES})


def test_twenty_concurrent_http_registrations_with_a_five_use_token_register_five():
    membership = owner_workspace()
    minted = join_token_issue(
        max_uses=USES, actor=actor_of(membership.workspace, name=str(membership.user.pk))
    )

    def attempt(n: int) -> str:
        client = APIClient(REMOTE_ADDR="127.0.0.1")
        body = {"join_token": minted.secret, "name": f"racer-{n}", "caps": ["mcp.test"]}
        response = client.post("/v1/cloud/runtimes/register", body, format="json")
        return f"{response.status_code} {response.json().get('error', '')}".strip()

    outcomes = race(attempt)

    assert outcomes == Counter({"201": USES, "401 join token already used": CALLERS - USES})
    names = set(Runtime.objects.values_list("name", flat=True))
    assert len(names) == USES
    assert JoinToken.objects.get(pk=minted.token.pk).uses == USES
