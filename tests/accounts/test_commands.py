"""Management commands that run in-process: ``createoperator``."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

PASSWORD = "plum-velvet-harbour-42"
NEW_PASSWORD = "quartz-meadow-lantern-17"

pytestmark = pytest.mark.django_db


def createoperator(*args: str, stdin: str = "") -> str:
    out = io.StringIO()
    call_command("createoperator", *args, stdin=io.StringIO(stdin), stdout=out)
    return out.getvalue()


def test_creates_an_operator_whose_password_checks() -> None:
    output = createoperator(
        "--email", "Ops@Example.com", "--name", "Ops", "--password-stdin", stdin=PASSWORD + "\n"
    )

    user = get_user_model().objects.get(email="ops@example.com")
    assert user.is_superuser
    assert user.is_staff
    assert user.name == "Ops"
    assert user.check_password(PASSWORD)
    assert PASSWORD not in output
    assert "created operator" in output


def test_password_flag_works_too() -> None:
    createoperator("--email", "flag@example.com", "--password", PASSWORD)

    assert get_user_model().objects.get(email="flag@example.com").check_password(PASSWORD)


def test_refuses_a_taken_email_in_any_case() -> None:
    createoperator("--email", "ops@example.com", "--password", PASSWORD)

    with pytest.raises(CommandError, match="already exists"):
        createoperator("--email", "OPS@example.com", "--password", NEW_PASSWORD)
    assert get_user_model().objects.get(email="ops@example.com").check_password(PASSWORD)


def test_update_resets_the_password() -> None:
    createoperator("--email", "ops@example.com", "--password", PASSWORD)

    output = createoperator(
        "--email", "ops@example.com", "--update", "--password-stdin", stdin=NEW_PASSWORD
    )

    user = get_user_model().objects.get(email="ops@example.com")
    assert user.check_password(NEW_PASSWORD)
    assert not user.check_password(PASSWORD)
    assert NEW_PASSWORD not in output


def test_update_needs_an_existing_operator() -> None:
    with pytest.raises(CommandError, match="no user with email"):
        createoperator("--email", "nobody@example.com", "--update", "--password", PASSWORD)
    get_user_model().objects.create_user("member@example.com", PASSWORD)
    with pytest.raises(CommandError, match="not an operator"):
        createoperator("--email", "member@example.com", "--update", "--password", NEW_PASSWORD)


@pytest.mark.parametrize("weak", ["short", "password123", "ops@example.com"])
def test_refuses_a_weak_password(weak: str) -> None:
    with pytest.raises(CommandError, match="password refused"):
        createoperator("--email", "ops@example.com", "--password-stdin", stdin=weak)
    assert not get_user_model().objects.filter(email="ops@example.com").exists()


def test_refuses_to_guess_without_a_password_source() -> None:
    with pytest.raises(CommandError, match="no password"):
        createoperator("--email", "ops@example.com")


def test_refuses_an_invalid_email() -> None:
    with pytest.raises(CommandError, match="valid email"):
        createoperator("--email", "not-an-email", "--password", PASSWORD)
