"""``manage.py runtime_heartbeat``: heart-beat to the control plane this installation joined."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from runtimes.agent import ControlPlaneError, credential_load, heartbeat_loop
from runtimes.management.commands.join import stop_on_signals


class Command(BaseCommand):
    """The heartbeat loop of a joined installation, from its stored credential (``serve``
    runs it as a supervised role when ``<data dir>/cloud-runtime.json`` exists)."""

    help = "Heart-beat to the control plane this installation joined (see manage.py join)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="send one heartbeat, print the answer, exit"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stop = stop_on_signals()
        try:
            credential = credential_load()
        except ControlPlaneError as exc:
            raise CommandError(str(exc)) from exc
        if credential is None:
            raise CommandError("this installation has not joined a control plane (manage.py join)")
        if options["once"]:
            from runtimes.agent import heartbeat

            try:
                runtime = heartbeat(credential)
            except ControlPlaneError as exc:
                raise CommandError(f"heartbeat refused: {exc}") from exc
            self.stdout.write(f"{runtime.get('id')} {runtime.get('status')}")
            return
        heartbeat_loop(credential, stop, say=self.stdout.write)
