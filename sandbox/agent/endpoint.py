"""Which OpenAI-compatible endpoint an ``agent.run`` talks to, and with which key.

Three ways, first match wins:

1. ``installation_id``: a model installation of the workspace with an ``endpoint_url``
   (a model attached as an external endpoint or served by a runtime). No key is sent.
2. ``base_url``: an endpoint named in the payload (a local Ollama, vLLM, ...). No key
   is sent: a workspace's stored key never goes to an address a job merely names.
3. The workspace's provider credential (``provider``/``credential``, ``openai``/
   ``default`` by default): its key, sent only to the credential's own ``base_url``
   (meta, set by whoever stored the credential) or the provider's public endpoint.
   Reading it is audited (``provider.credential.read``, purpose ``agent.run``).

Anything missing is a :class:`EndpointUnavailable` that says what to configure. Every
URL, whichever way it came, is fetched through the egress guard
(:mod:`matrixcloud.lib.egress`), and a ``base_url`` is checked by it at creation too.
"""

from __future__ import annotations

from typing import Any

from accounts.models import ProviderCredential
from accounts.principals import Actor
from accounts.services.providers import provider_secret_read
from matrixcloud.lib import egress
from runtimes.detection import configured_engine_urls
from sandbox.agent.llm import ChatEndpoint

PROVIDER_ENDPOINTS = {
    "openai": "https://api.openai.com/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "together": "https://api.together.xyz/v1",
}


class EndpointUnavailable(Exception):
    """No usable endpoint for the run; the message says what is missing."""


def url_check(url: str) -> str:
    """An http(s) URL with a host that the egress guard does not refuse on sight (an
    address of this server's API, bus or database, a metadata address, ...), else
    ValueError naming why. Checked at job creation and for a credential's base_url;
    the fetch checks again (a name may resolve elsewhere by then)."""
    try:
        return egress.url_check(url, configured=configured_engine_urls())
    except egress.EgressError as exc:
        raise ValueError(exc.message) from None


def endpoint_resolve(
    *,
    actor: Actor,
    model: str,
    base_url: str = "",
    installation_id: str = "",
    provider: str = "openai",
    credential: str = "default",
) -> ChatEndpoint:
    """The endpoint of one run (database reads; call it off the event loop). ``actor``
    is the run's creator (``Actor.job_creator``), whose role now decides whether the
    credential may be used."""
    workspace_id = actor.workspace.pk
    if installation_id:
        return _installation_endpoint(workspace_id, installation_id, model)
    if base_url:
        return ChatEndpoint(base_url=base_url, model=_model(model), source="base_url")
    meta = (
        ProviderCredential.objects.filter(
            workspace_id=workspace_id, provider=provider, label=credential
        )
        .values_list("meta", flat=True)
        .first()
    )
    secret = provider_secret_read(
        actor=actor, provider=provider, label=credential, purpose="agent.run"
    )
    if secret is None:
        raise EndpointUnavailable(
            f"the workspace has no {provider}/{credential} credential: store one at "
            "/v1/cloud/providers, or give base_url or installation_id"
        )
    url = _credential_url(meta) or PROVIDER_ENDPOINTS.get(provider, "")
    if not url:
        raise EndpointUnavailable(
            f"no endpoint is known for provider {provider!r}: set base_url in the credential's meta"
        )
    return ChatEndpoint(
        base_url=url, model=_model(model), api_key=secret, source=f"{provider}/{credential}"
    )


def _credential_url(meta: Any) -> str:
    value = meta.get("base_url") if isinstance(meta, dict) else None
    if not isinstance(value, str) or not value:
        return ""
    try:
        return url_check(value)
    except ValueError as exc:
        raise EndpointUnavailable(f"the credential's base_url {exc}") from None


def _model(model: str) -> str:
    if not model:
        raise EndpointUnavailable("model is required (the name the endpoint serves)")
    return model


def _installation_endpoint(workspace_id: str, installation_id: str, model: str) -> ChatEndpoint:
    from models_registry.choices import InstallationStatus
    from models_registry.engines import openai_base
    from models_registry.models import ModelInstallation

    installation = (
        ModelInstallation.objects.filter(workspace_id=workspace_id, pk=installation_id)
        .select_related("profile")
        .first()
    )
    if installation is None:
        raise EndpointUnavailable(f"model installation {installation_id} not found")
    if installation.status != InstallationStatus.READY or not installation.endpoint_url:
        raise EndpointUnavailable(
            f"model installation {installation_id} serves no endpoint (status "
            f"{installation.status}; attach it as an external endpoint, or serve it)"
        )
    external_id = installation.profile.external_id if installation.profile else ""
    served = model or external_id.removeprefix("hf:")
    return ChatEndpoint(
        base_url=openai_base(installation.endpoint_url),
        model=_model(served),
        source=f"installation {installation_id}",
    )
