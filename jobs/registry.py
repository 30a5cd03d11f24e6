"""The job-type registry: handlers register themselves; jobs imports no domain app.

``/v1/capabilities`` lists exactly the types registered here, so a type is advertised
only once its handler really exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_HANDLERS: dict[str, type[Any]] = {}

T = TypeVar("T", bound=type[Any])


def register(job_type: str) -> Callable[[T], T]:
    """Class decorator: make ``cls`` the handler of ``job_type``."""

    def decorate(cls: T) -> T:
        if job_type in _HANDLERS and _HANDLERS[job_type] is not cls:
            raise ValueError(f"job type {job_type!r} is already registered")
        _HANDLERS[job_type] = cls
        return cls

    return decorate


def handler_for(job_type: str) -> type[Any] | None:
    return _HANDLERS.get(job_type)


def registered_types() -> list[str]:
    return sorted(_HANDLERS)
