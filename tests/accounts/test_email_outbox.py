"""The account email outbox (``accounts.outbox``) and the worker's wake and sweeps
(``matrixcloud.lib.wake``, ``matrixcloud.lib.sweeps``).

An email is a row written with the change that asks for it, so it is sent once the
change commits, never if it rolls back, and survives until a worker delivers it; a
failed send is tried again later. The last test queues a reset with no worker running,
then starts a real ``manage.py worker`` whose mail goes to a small SMTP server here.
"""

from __future__ import annotations

import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone

from accounts.emails import RESET_REQUEST, email_queue
from accounts.models import OutboxEmail, PasswordReset
from accounts.outbox import LEASE, MAX_ATTEMPTS, RETRY_FIRST, outbox_deliver
from matrixcloud.lib import sweeps, wake
from matrixcloud.lib.bus import free_port
from tests import factories
from tests.jobs.test_jobs_worker import REPO, Worker, wait_for, worker_env

cast = factories.cast
clock = factories.clock


@pytest.fixture
def locmem(settings: Any) -> list[Any]:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    return mail.outbox


def failed_change() -> None:
    with transaction.atomic():
        email_queue("verify", email="gone@example.com", secret="mxev_never")
        raise RuntimeError("the change fails")


@pytest.mark.django_db
def test_an_email_is_queued_with_its_change_and_sent_once_it_commits(
    locmem, django_capture_on_commit_callbacks
):
    heard: list[dict[str, Any]] = []
    with wake.listening(heard.append):
        with pytest.raises(RuntimeError):
            failed_change()
        with django_capture_on_commit_callbacks(execute=True):
            email_queue("invite", email="new@example.com", secret="mxin_x", workspace_name="W")
    assert heard == [{"type": "worker.wake", "sweep": "accounts"}]  # the rolled back: none
    assert list(OutboxEmail.objects.values_list("to", flat=True)) == ["new@example.com"]
    assert locmem == []  # not sent by the request: by the worker's sweep
    assert outbox_deliver() == 1
    [sent] = locmem
    assert sent.to == ["new@example.com"]
    assert "/invite?token=mxin_x" in sent.body
    assert not OutboxEmail.objects.exists()
    assert outbox_deliver() == 0


@pytest.mark.django_db
def test_a_failed_send_is_tried_again_later_then_given_up(settings, clock):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nobody listens
    settings.EMAIL_TIMEOUT = 2
    email_queue("verify", email="later@example.com", secret="mxev_later")
    assert outbox_deliver() == 0
    row = OutboxEmail.objects.get()
    assert (row.attempts, row.due_at) == (1, clock.now + RETRY_FIRST)
    assert outbox_deliver() == 0  # not due yet: untouched
    assert OutboxEmail.objects.get().attempts == 1
    for attempt in range(2, MAX_ATTEMPTS + 1):
        clock.advance(hours=1)
        assert outbox_deliver() == 0
        if attempt < MAX_ATTEMPTS:
            pause = RETRY_FIRST * 2 ** (attempt - 1)
            assert OutboxEmail.objects.get().due_at == clock.now + pause
    assert not OutboxEmail.objects.exists()  # given up after MAX_ATTEMPTS, logged


@pytest.mark.django_db
def test_a_leased_row_is_left_to_the_worker_sending_it(locmem, clock):
    email_queue("verify", email="busy@example.com", secret="mxev_busy")
    OutboxEmail.objects.update(due_at=clock.now + LEASE)  # as another worker's lease leaves it
    assert outbox_deliver() == 0
    assert locmem == []
    clock.advance(seconds=LEASE.total_seconds())  # that worker died mid-send: sent again
    assert outbox_deliver() == 1
    assert [m.to for m in locmem] == [["busy@example.com"]]


@pytest.mark.django_db
def test_a_sweep_runs_by_app_label_and_a_failing_one_does_not_stop_the_others(locmem):
    email_queue("verify", email="swept@example.com", secret="mxev_swept")
    assert sweeps.sweep_app("nope") is False
    assert sweeps.sweep_app("accounts") is True
    assert [m.to for m in locmem] == [["swept@example.com"]]
    assert sweeps.sweep_all()[:2] == ["accounts", "jobs"]  # INSTALLED_APPS order


# --- with a real worker ----------------------------------------------------------------------
class Smtp(socketserver.StreamRequestHandler):
    """Just enough SMTP for Django's backend: every message lands in ``server.received``."""

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        self.reply("220 test")
        while line := self.rfile.readline().decode():
            verb = line.strip().split(" ")[0].upper()
            if verb == "DATA":
                self.reply("354 go on")
                body = []
                while (data := self.rfile.readline().decode()) not in (".\r\n", ""):
                    body.append(data)
                self.server.received.append("".join(body))  # type: ignore[attr-defined]
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


@pytest.fixture
def smtp() -> Iterator[socketserver.ThreadingTCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Smtp)
    server.received = []  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_reset_asked_for_while_no_worker_runs_is_mailed_when_one_starts(
    api, smtp, tmp_path: Path
):
    factories.signup("Rita Reset", "rita@example.com", "Rita's")
    OutboxEmail.objects.all().delete()  # her welcome email is not this test's
    response = api.post("/v1/auth/forgot", {"email": "rita@example.com"})
    assert response.status_code == 200
    assert OutboxEmail.objects.get().kind == RESET_REQUEST
    assert not PasswordReset.objects.exists()  # no link yet: it is made when delivered

    env = worker_env()
    env.update(
        MATRIXCLOUD_EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        MATRIXCLOUD_SMTP_HOST="127.0.0.1",
        MATRIXCLOUD_SMTP_PORT=str(smtp.server_address[1]),
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "worker"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(proc, log)
    try:
        worker.ready()
        [message] = wait_for(lambda: smtp.received, 15, "the reset email")  # type: ignore[attr-defined]
        assert "rita@example.com" in message
        assert "/reset?token=mxpr_" in message
        wait_for(lambda: not OutboxEmail.objects.exists(), 5, "the row gone once sent")
        assert PasswordReset.objects.filter(user__email="rita@example.com").count() == 1
    finally:
        worker.stop()
    assert timezone.now() - PasswordReset.objects.get().created_at < timedelta(minutes=1)
