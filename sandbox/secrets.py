"""Where a sandbox's ``${secret:NAME}`` and ``secret://NAME`` references are checked
and resolved.

A NAME is one of the workspace's provider credentials (``/v1/cloud/providers``):
``NAME`` alone is that provider's ``default`` credential (``${secret:huggingface}``),
``provider/label`` names another label (``${secret:openai/work}``). Provider names are
compared lowercased, as they are stored.

Who may reference one: the workspace's Owners and Admins (and the operator, and the
local-dev Owner), and a Member only when the credential is marked usable by members.
:func:`secrets_admit` checks it when the session is created (a 403 naming the
credential); the host checks it again through :func:`resolve_secret` when it starts the
session, with the creator's role at that moment. The host resolves each reference at
start (never at creation, never stored): the value goes into the server's environment
only. Every resolution is an audited read (``provider.credential.read``, purpose
``sandbox.env``), every refusal an audited ``provider.credential.refused``.
"""

from __future__ import annotations

from collections.abc import Mapping

from accounts.principals import Actor
from accounts.services.providers import (
    provider_secret_read,
    provider_use_check,
    secret_name_parse,
)
from sandbox.policy import secret_references

PURPOSE = "sandbox.env"


def secrets_admit(*, actor: Actor, env: Mapping[str, str]) -> None:
    """Refuse at creation, audited, an env whose secret references name a credential
    the actor's user may not use (``CredentialForbidden``, 403 naming it); no user is
    the operator or the local-dev Owner."""
    user_id = str(actor.user.pk) if actor.user is not None else None
    for name in sorted(set(secret_references(env).values())):
        provider, label = secret_name_parse(name)
        provider_use_check(
            workspace=actor.workspace,
            provider=provider,
            label=label,
            user_id=user_id,
            purpose=PURPOSE,
            actor=actor.id,
            ip=actor.ip,
        )


def resolve_secret(workspace_id: str, name: str, *, user_id: str | None) -> str | None:
    """The value of the workspace's secret ``name`` for the session of ``user_id`` (its
    creator; None for the operator's or the local-dev Owner's), or None when it has none
    (the session then fails to start with an error naming the env key and the secret).
    A credential the creator may not use now raises ``CredentialForbidden``."""
    provider, label = secret_name_parse(name)
    return provider_secret_read(
        workspace=workspace_id,
        provider=provider,
        label=label,
        purpose=PURPOSE,
        actor=user_id,
        user_id=user_id,
    )
