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
    for name in sorted(set(secret_references(env).values())):
        provider, label = secret_name_parse(name)
        provider_use_check(actor=actor, provider=provider, label=label, purpose=PURPOSE)


def resolve_secret(actor: Actor, name: str) -> str | None:
    """The value of the workspace's secret ``name`` for a session's creator
    (``Actor.job_creator``), or None when it has none (the session then fails to start
    with an error naming the env key and the secret). A credential the creator may not
    use now raises ``CredentialForbidden``."""
    provider, label = secret_name_parse(name)
    return provider_secret_read(actor=actor, provider=provider, label=label, purpose=PURPOSE)
