"""``manage.py sandbox_prefetch <spec> [...]``: cache allow-listed MCP servers for sandboxes."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from sandbox.prefetch import PrefetchFailed, PrefetchRefused, prefetch


class Command(BaseCommand):
    """Install each package into ``<data>/sandbox-cache`` and print how to start it."""

    help = (
        "Install allow-listed MCP server packages (npm:<name>, pypi:<name>, an npm pack "
        "tarball or a wheel) into the read-only sandbox cache, for offline starts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("specs", nargs="+", metavar="spec")

    def handle(self, *args: Any, **options: Any) -> None:
        for raw in options["specs"]:
            try:
                done = prefetch(raw)
            except (PrefetchRefused, PrefetchFailed) as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"{done.spec.ecosystem} {done.spec.name}: {done.location}")
            for command in done.start_commands:
                self.stdout.write(f"  start command: {command}")
