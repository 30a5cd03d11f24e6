"""Public identifiers: a type prefix and random hex, like the original (``job_…``).

Kept on purpose: docs/COMPATIBILITY.md#c-01.

Each kind has a named function so model fields can use it as a default (migrations
serialise defaults by import path).
"""

from __future__ import annotations

import secrets


def new_id(prefix: str, nbytes: int = 8) -> str:
    return f"{prefix}_{secrets.token_hex(nbytes)}"


def new_workspace_id() -> str:
    return new_id("ws")


def new_user_id() -> str:
    return new_id("usr")


def new_job_id() -> str:
    return new_id("job", 9)


def new_sandbox_id() -> str:
    return new_id("sbx", 9)


def new_tool_call_id() -> str:
    return new_id("tc", 9)


def new_model_profile_id() -> str:
    return new_id("mp")


def new_model_installation_id() -> str:
    return new_id("mi")


def new_runtime_id() -> str:
    return new_id("rt")


def new_join_token_id() -> str:
    return new_id("jt")


def new_provider_credential_id() -> str:
    return new_id("pc")


def new_usage_event_id() -> str:
    return new_id("ue")


def new_audit_event_id() -> str:
    return new_id("au")
