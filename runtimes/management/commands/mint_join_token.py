"""``manage.py mint_join_token``: a join token for a workspace, from the command line."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Workspace
from accounts.principals import Actor
from matrixcloud.errors import ApplicationError
from runtimes.services import join_token_issue


class Command(BaseCommand):
    """Mint a join token as the operator (audited). The secret alone goes to stdout, so
    ``SECRET=$(manage.py mint_join_token --workspace acme)`` works; the rest to stderr."""

    help = "Mint a join token for a workspace (slug or id); prints the secret once."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--workspace", required=True, help="the workspace's slug or id")
        parser.add_argument("--label", default="", help="a label shown in listings")
        parser.add_argument("--max-uses", type=int, default=1, help="1 to 1000 (default 1)")
        parser.add_argument(
            "--ttl-minutes", type=int, default=0, help="1 to 43200 (default 24 hours)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        wanted = options["workspace"].strip()
        workspace = (
            Workspace.objects.filter(slug=wanted).first()
            or Workspace.objects.filter(pk=wanted).first()
        )
        if workspace is None:
            raise CommandError(f"no workspace {wanted!r}")
        try:
            minted = join_token_issue(
                actor=Actor.operator(workspace),
                label=options["label"],
                max_uses=options["max_uses"],
                ttl_minutes=options["ttl_minutes"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        token = minted.token
        self.stderr.write(
            f"join token {token.pk} for {workspace.slug}: {token.max_uses} use(s), "
            f"expires {token.expires_at.isoformat()}"
        )
        self.stdout.write(minted.secret)
