"""Job types for tests only: registered when this module is imported.

The test process imports it directly; a worker subprocess imports it through
``MATRIX_RUNTIME_EXTRA_JOB_MODULES=tests.job_handlers`` (run with cwd at the repository
root), so both sides know the same types. Each type has a pydantic ``Params`` model, so
payload validation at creation is exercised as for the real types.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from jobs.handlers import BaseHandler, JobFailed, JobParams
from jobs.registry import register


class SleepParams(JobParams):
    seconds: float = Field(1.0, ge=0, le=3600)
    ticks: int = Field(1, ge=1, le=100)
    spawn: bool = False


@register("test.sleep")
class SleepHandler(BaseHandler):
    """Sleeps in ``ticks`` steps (one progress event each), waking at once on cancel or
    expiry; with ``spawn`` it first starts ``sleep 300`` in its own process group and
    reports the pid in a ``spawn`` event, so a test can check that it was killed."""

    Params = SleepParams

    def run(self) -> dict[str, Any]:
        params = self.params
        assert isinstance(params, SleepParams)
        if params.spawn:
            proc = self.ctx.popen(["sleep", "300"])
            self.ctx.emit("spawn", "ok", f"started sleep 300 as pid {proc.pid}", {"pid": proc.pid})
        for tick in range(1, params.ticks + 1):
            self.ctx.emit("sleep", "running", f"tick {tick} of {params.ticks}", {"tick": tick})
            self.ctx.wait(params.seconds / params.ticks)
        return {"slept": params.seconds}


class FailParams(JobParams):
    reason: str = "the test asked for a failure"


@register("test.fail")
class FailHandler(BaseHandler):
    """An expected failure: ends ``error`` with ``reason`` as the message."""

    Params = FailParams

    def run(self) -> None:
        assert isinstance(self.params, FailParams)
        raise JobFailed(self.params.reason)


@register("test.crash")
class CrashHandler(BaseHandler):
    """A bug in a handler: an unexpected exception with a traceback."""

    def run(self) -> None:
        return {"answer": 1 // 0}  # type: ignore[return-value]


class EchoParams(JobParams):
    message: str = Field(min_length=1)
    count: int = Field(1, ge=1, le=10)


@register("test.echo")
class EchoHandler(BaseHandler):
    """Returns its params: the smallest complete job (and the benchmark's trivial type)."""

    Params = EchoParams

    def run(self) -> dict[str, Any]:
        self.ctx.emit("echo", "ok", f"echoing {self.params}")
        return self.params.model_dump()
