"""``manage.py join``: make this installation a runtime of another control plane."""

from __future__ import annotations

import signal
import threading
from argparse import ArgumentParser
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from runtimes.agent import ControlPlaneError, credential_load, credential_path, heartbeat_loop
from runtimes.agent import join as agent_join


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so loops end cleanly (and say offline)."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


class Command(BaseCommand):
    """Register this installation with a control plane's join token, store the runtime
    token (``<data dir>/cloud-runtime.json``, mode 0600), then heart-beat with this
    installation's status, capabilities and resources until stopped (SIGTERM/Ctrl-C
    sends a last ``offline``). With ``--no-heartbeat`` it only registers: ``serve`` then
    heart-beats whenever that file exists."""

    help = "Register this installation as a runtime of a control plane, then heart-beat."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--control-plane", required=True, help="the control plane's URL")
        parser.add_argument("--token", required=True, help="a join token (mxrt_…)")
        parser.add_argument("--name", default="", help="this runtime's name (default hostname)")
        parser.add_argument("--url", default="", help="where this installation can be reached")
        parser.add_argument("--region", default="", help="a region label")
        parser.add_argument(
            "--no-heartbeat", action="store_true", help="register and store, then exit"
        )
        parser.add_argument(
            "--force", action="store_true", help="register again though a credential is stored"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        existing = self._stored()
        if existing is not None and not options["force"]:
            raise CommandError(
                f"already joined {existing.control_plane} as {existing.runtime_id} "
                f"({credential_path()}); pass --force to register again"
            )
        stop = stop_on_signals()
        try:
            credential = agent_join(
                control_plane=options["control_plane"],
                join_token=options["token"].strip(),
                name=options["name"],
                url=options["url"],
                region=options["region"],
            )
        except ControlPlaneError as exc:
            raise CommandError(f"could not join {options['control_plane']}: {exc}") from exc
        self.stdout.write(
            f"joined {credential.control_plane} as {credential.runtime_id} "
            f"(workspace {credential.workspace_id}); credential stored in {credential_path()}"
        )
        if options["no_heartbeat"]:
            return
        heartbeat_loop(credential, stop, say=self.stdout.write)

    def _stored(self) -> Any:
        try:
            return credential_load()
        except ControlPlaneError as exc:
            raise CommandError(str(exc)) from exc
