"""Where a sandbox's ``${secret:NAME}`` and ``secret://NAME`` references are resolved.

The host calls :func:`resolve_secret` for each reference when it starts a session (never
at creation, never stored): the value goes into the server's environment only.

A NAME is one of the workspace's provider credentials (``/v1/cloud/providers``):
``NAME`` alone is that provider's ``default`` credential (``${secret:huggingface}``),
``provider/label`` names another label (``${secret:openai/work}``). Provider names are
compared lowercased, as they are stored. Every resolution is an audited read
(``provider.credential.read``, purpose ``sandbox.env``) through the providers service.
"""

from __future__ import annotations

from accounts.services.providers import provider_secret_read, secret_name_parse

PURPOSE = "sandbox.env"


def resolve_secret(workspace_id: str, name: str) -> str | None:
    """The value of the workspace's secret ``name``, or None when it has none (the
    session then fails to start with an error naming the env key and the secret)."""
    provider, label = secret_name_parse(name)
    return provider_secret_read(
        workspace=workspace_id, provider=provider, label=label, purpose=PURPOSE
    )
