"""A small process supervisor: the machinery behind ``manage.py serve``.

Each role runs in its own session (so its own process group): a signal reaches the role
and everything it forked, and a terminal's Ctrl-C reaches only the supervisor, which
then stops the roles in a chosen order. A role that exits unexpectedly is restarted with
a doubling backoff; one that keeps crashing ends the whole run (``CrashLoop``). Output
is passed through line by line, prefixed with the role's name. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import BinaryIO

from matrixcloud.lib.backoff import Backoff
from matrixcloud.lib.processes import die_with_parent, signal_group

KILL_WAIT = 5.0
PUMP_JOIN = 1.0
POLL = 0.05
MAX_LINE = 64 * 1024


class CrashLoop(RuntimeError):
    """A role exited unexpectedly more often than the restart policy allows."""


@dataclass(frozen=True)
class RestartPolicy:
    """How a role that exits unexpectedly comes back.

    The first restart waits ``first_delay`` seconds, each further one twice as long up to
    ``max_delay``; a run of ``stable_after`` seconds resets the delay. More than
    ``max_restarts`` exits within ``window`` seconds is a crash loop.
    """

    first_delay: float = 0.5
    max_delay: float = 10.0
    max_restarts: int = 5
    window: float = 60.0
    stable_after: float = 30.0


@dataclass(frozen=True)
class Role:
    """One supervised program: its name, argv, environment and how it stops gracefully.

    The stop signal goes to the whole process group, or with ``stop_leader_only`` to the
    role's own process, for programs that stop their children themselves. Whatever is
    left of the group after the grace is killed either way.
    """

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    stop_leader_only: bool = False


@dataclass
class _Child:
    """The supervisor's state for one role: its process and its restart bookkeeping."""

    role: Role
    retry: Backoff
    proc: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    exits: deque[float] = field(default_factory=deque)


def has_exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` has exited, without reaping it: its pid (and group id) stay ours."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Supervisor:
    """Starts roles, restarts the ones that die, and stops them all in order.

    Drive it from one thread: call ``tick()`` every ~0.1 s, ``stop()`` at the end. Only
    ``kill_all()`` may be called from a signal handler.
    """

    def __init__(
        self, *, out: BinaryIO, policy: RestartPolicy | None = None, grace: float = 10.0
    ) -> None:
        self.policy = policy or RestartPolicy()
        self.grace = grace
        self.forced = False
        self._out = out
        # Re-entrant: a signal handler may say() while the main thread is writing.
        self._out_lock = threading.RLock()
        self._children: dict[str, _Child] = {}

    # --- output ---------------------------------------------------------------------
    def say(self, text: str, *, name: str = "serve") -> None:
        self._write(f"{name:<13}| {text}\n".encode())

    def _write(self, data: bytes) -> None:
        with self._out_lock, contextlib.suppress(OSError, ValueError):
            self._out.write(data)
            self._out.flush()

    def _pump(self, name: str, stream: BinaryIO) -> None:
        prefix = f"{name:<13}| ".encode()
        with stream:
            for line in iter(lambda: stream.readline(MAX_LINE), b""):
                self._write(prefix + line.rstrip(b"\n") + b"\n")

    # --- starting ---------------------------------------------------------------------
    def start(self, role: Role) -> None:
        """Start ``role`` now; it is supervised from the next ``tick()``."""
        child = _Child(role=role, retry=Backoff(self.policy.first_delay, self.policy.max_delay))
        self._children[role.name] = child
        self._spawn(child)

    def _spawn(self, child: _Child) -> None:
        role = child.role
        proc = subprocess.Popen(
            list(role.argv),
            env=dict(role.env) if role.env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # The role gets its stop signal when the supervisor dies, even by SIGKILL
            # (its own session is out of reach of a group kill), and stops as on an
            # orderly stop instead of running on unsupervised.
            preexec_fn=die_with_parent(role.stop_signal),
        )
        assert proc.stdout is not None
        child.proc, child.started_at, child.restart_at = proc, time.monotonic(), None
        child.pump = threading.Thread(
            target=self._pump, args=(role.name, proc.stdout), name=f"out-{role.name}", daemon=True
        )
        child.pump.start()

    def pid(self, name: str) -> int | None:
        child = self._children.get(name)
        return child.proc.pid if child and child.proc else None

    # --- supervising ------------------------------------------------------------------
    def tick(self) -> None:
        """Notice exits and run due restarts; raises ``CrashLoop`` when a role keeps dying."""
        now = time.monotonic()
        for child in self._children.values():
            if child.proc is not None and has_exited(child.proc):
                code = self._collect(child)
                self._schedule_restart(child, now, describe_exit(code))
            elif child.restart_at is not None and now >= child.restart_at:
                self._restart(child, now)

    def _restart(self, child: _Child, now: float) -> None:
        try:
            self._spawn(child)
        except OSError as exc:
            self._schedule_restart(child, now, f"could not start ({exc})")
        else:
            self.say(f"restarted {child.role.name} (pid {self.pid(child.role.name)})")

    def _schedule_restart(self, child: _Child, now: float, why: str) -> None:
        name, policy = child.role.name, self.policy
        if child.started_at and now - child.started_at >= policy.stable_after:
            child.retry.reset()
        child.exits.append(now)
        while child.exits and now - child.exits[0] > policy.window:
            child.exits.popleft()
        if len(child.exits) > policy.max_restarts:
            raise CrashLoop(
                f"{name} {why}; it stopped {len(child.exits)} times within {policy.window:.0f} s"
            )
        delay = next(child.retry)
        self.say(f"{name} {why}; restarting in {delay:.1f} s")
        child.restart_at = now + delay

    def _collect(self, child: _Child) -> int | None:
        """Kill what is left of the child's group, reap the child, close its output."""
        proc = child.proc
        assert proc is not None
        signal_group(proc.pid, signal.SIGKILL)
        try:
            code: int | None = proc.wait(timeout=KILL_WAIT)
        except subprocess.TimeoutExpired:
            self.say(f"{child.role.name} (pid {proc.pid}) survived SIGKILL for {KILL_WAIT} s")
            code = None
        if child.pump is not None:
            child.pump.join(timeout=PUMP_JOIN)
        child.proc = child.pump = None
        return code

    # --- stopping ---------------------------------------------------------------------
    def stop(self, order: Iterable[str] = ()) -> None:
        """Stop the roles named in ``order`` one by one, then any others, newest first."""
        names = [name for name in order if name in self._children]
        names += [name for name in reversed(self._children) if name not in names]
        for name in names:
            self._stop_child(self._children[name])

    def _stop_child(self, child: _Child) -> None:
        child.restart_at = None
        proc = child.proc
        if proc is None:
            return
        began = time.monotonic()
        if child.role.stop_leader_only:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(child.role.stop_signal)
        else:
            signal_group(proc.pid, child.role.stop_signal)
        if not self._wait_exit(proc, self.grace) and not self.forced:
            self.say(f"{child.role.name} did not stop within {self.grace:g} s; killing it")
        code = self._collect(child)
        took = time.monotonic() - began
        self.say(f"{child.role.name} stopped in {took:.1f} s ({describe_exit(code)})")

    def _wait_exit(self, proc: subprocess.Popen[bytes], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not has_exited(proc):
            if self.forced or time.monotonic() > deadline:
                return False
            time.sleep(POLL)
        return True

    def kill_all(self) -> None:
        """SIGKILL every role's group now (safe from a signal handler); ``stop()`` reaps."""
        self.forced = True
        for child in list(self._children.values()):
            if child.proc is not None:
                signal_group(child.proc.pid, signal.SIGKILL)

    @contextlib.contextmanager
    def trap_signals(self) -> Iterator[StopRequest]:
        """While inside, SIGINT/SIGTERM request a stop; a second one kills everything."""
        request = StopRequest(self.kill_all, self.say)
        handler: Callable[[int, FrameType | None], None] = request.handle
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield request
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


class StopRequest:
    """The first SIGINT/SIGTERM asks for an orderly stop; the second one escalates."""

    def __init__(self, escalate: Callable[[], None], say: Callable[[str], None]) -> None:
        self.requested = False
        self._escalate = escalate
        self._say = say

    def handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            self._say(f"{name} again: killing everything now")
            self._escalate()
            return
        self.requested = True
        self._say(f"{name}: stopping")
