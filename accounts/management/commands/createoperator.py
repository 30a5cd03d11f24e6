"""``manage.py createoperator``: create an operator (superuser) or reset an operator's password."""

from __future__ import annotations

import getpass
import sys
from argparse import ArgumentParser
from typing import Any, TextIO

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction


class Command(BaseCommand):
    """Create an operator: a superuser who signs in to the admin and the console by email.

    The password comes from ``--password-stdin`` (scripts), an interactive prompt (a
    terminal), or ``--password`` (visible to other local users in ``ps``: avoid it). It is
    checked by the configured password validators and never printed. ``--update`` resets
    the password of an existing operator instead.
    """

    help = "Create an operator (superuser), or reset an operator's password with --update."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--email", required=True, help="the operator's email (their login)")
        parser.add_argument("--name", default="", help="display name")
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--password", help="the password (visible in ps; prefer stdin)")
        source.add_argument(
            "--password-stdin", action="store_true", help="read the password from stdin"
        )
        parser.add_argument(
            "--update", action="store_true", help="reset the password of an existing operator"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        email: str = options["email"].strip()
        stdin: TextIO = options.get("stdin") or sys.stdin
        User = get_user_model()
        existing = User.objects.filter(email__iexact=email).first()
        if options["update"]:
            self._update(existing, email, options, stdin)
            return
        if existing is not None:
            raise CommandError(
                f"a user with email {email} already exists; pass --update to reset the "
                "password of an operator"
            )
        password = self._password(options, stdin, User(email=email, name=options["name"]))
        try:
            with transaction.atomic():
                User.objects.create_superuser(email, password, name=options["name"])
        except IntegrityError as exc:
            raise CommandError(f"a user with email {email} already exists") from exc
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"created operator {email}")

    def _update(self, user: Any, email: str, options: dict[str, Any], stdin: TextIO) -> None:
        if user is None:
            raise CommandError(f"no user with email {email}; leave out --update to create one")
        if not user.is_superuser:
            raise CommandError(f"{email} is not an operator; change roles in the admin")
        user.set_password(self._password(options, stdin, user))
        if options["name"]:
            user.name = options["name"]
        user.save()
        self.stdout.write(f"reset the password of operator {user.email}")

    def _password(self, options: dict[str, Any], stdin: TextIO, user: Any) -> str:
        password = self._read_password(options, stdin)
        try:
            validate_password(password, user=user)
        except ValidationError as exc:
            raise CommandError("password refused: " + " ".join(exc.messages)) from exc
        return password

    def _read_password(self, options: dict[str, Any], stdin: TextIO) -> str:
        if options["password"] is not None:
            return str(options["password"])
        if options["password_stdin"]:
            return stdin.readline().rstrip("\r\n")
        if not stdin.isatty():
            raise CommandError("no password: pass --password-stdin, or run in a terminal")
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password (again): "):
            raise CommandError("the passwords did not match")
        return first
