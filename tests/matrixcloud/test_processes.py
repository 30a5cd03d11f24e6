"""matrixcloud.lib.processes with real processes: a group is really killed, a child armed
with ``die_with_parent`` really dies with its parent, and ``process_gone`` tells."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from matrixcloud.lib.processes import (
    kill_process_group,
    process_gone,
    signal_group,
)
from tests import REPO_ROOT

REPO = REPO_ROOT
BOUND = 10.0

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups, prctl: Linux")


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {BOUND} s")
        time.sleep(0.02)


def group_with_child(script: str) -> tuple[subprocess.Popen[str], int]:
    """A shell leading its own group, and the pid of the ``sleep`` it forked."""
    proc = subprocess.Popen(
        ["sh", "-c", f"{script} sleep 60 & echo $!; wait"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_kill_process_group_kills_the_leader_and_its_child():
    proc, child = group_with_child("")
    kill_process_group(proc, grace=BOUND)
    assert proc.returncode == -signal.SIGTERM
    until(lambda: process_gone(child), "the child's end")


def test_kill_process_group_kills_what_ignores_term_after_the_grace():
    proc, child = group_with_child("trap '' TERM;")  # the sleep inherits the ignored TERM
    started = time.monotonic()
    kill_process_group(proc, grace=0.3)
    assert time.monotonic() - started >= 0.3
    assert proc.returncode == -signal.SIGKILL
    until(lambda: process_gone(child), "the child's end")


def test_kill_process_group_of_an_exited_leader_still_kills_its_child():
    proc, child = group_with_child("")
    os.kill(proc.pid, signal.SIGKILL)  # the leader only: its child lives on
    proc.wait(timeout=BOUND)
    assert not process_gone(child)
    kill_process_group(proc)
    until(lambda: process_gone(child), "the child's end")


def test_signal_group_reaches_the_group_and_a_gone_group_is_fine():
    proc, child = group_with_child("")
    signal_group(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=BOUND) == -signal.SIGKILL
    until(lambda: process_gone(child), "the child's end")
    signal_group(proc.pid, signal.SIGKILL)  # gone: no error


PARENT = """
import signal, subprocess, sys, time
from matrixcloud.lib.processes import die_with_parent
arm = None if sys.argv[1] == "none" else die_with_parent(signal.Signals[sys.argv[1]])
child = subprocess.Popen(sys.argv[2:], start_new_session=True, preexec_fn=arm)
print(child.pid, flush=True)
time.sleep(60)
"""


def orphan_of_killed_parent(sig: str, *argv: str, ready: Path | None = None) -> int:
    """Start a parent whose child (``argv``) is in a session of its own, armed with
    ``sig`` ("none": not armed), and SIGKILL the parent (once the child made ``ready``);
    the child's pid."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, sig, *(argv or ("sleep", "60"))],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    if ready is not None:
        until(ready.exists, "the child's start")
    parent.kill()
    parent.wait(timeout=BOUND)
    return child


def test_die_with_parent_kills_the_child_when_its_parent_is_killed():
    child = orphan_of_killed_parent("SIGKILL")
    until(lambda: process_gone(child), "the child's end")


def test_without_die_with_parent_the_child_outlives_its_parent():
    child = orphan_of_killed_parent("none")
    try:
        time.sleep(0.3)
        assert not process_gone(child)
    finally:
        os.kill(child, signal.SIGKILL)


def test_die_with_parent_sends_the_signal_asked_for(tmp_path):
    said, ready = tmp_path / "said", tmp_path / "ready"
    script = f"trap 'echo TERM > {said}; kill $!; exit 0' TERM; touch {ready}; sleep 60 & wait"
    child = orphan_of_killed_parent("SIGTERM", "sh", "-c", script, ready=ready)
    until(lambda: process_gone(child), "the child's end")
    assert said.read_text().strip() == "TERM"


def test_process_gone():
    proc = subprocess.Popen(["sleep", "60"])
    assert not process_gone(proc.pid)
    proc.kill()
    until(lambda: process_gone(proc.pid), "the zombie")  # not reaped yet: still gone
    proc.wait(timeout=BOUND)
    assert process_gone(proc.pid)
