"""Models: Hugging Face sources, model profiles and installations."""

from django.apps import AppConfig


class ModelsRegistryConfig(AppConfig):
    """Models: Hugging Face sources, model profiles and installations.

    ``ready()`` registers the model job types (``model.inspect``, ``model.pull``,
    ``model.preload``, ``model.attach``) with the job engine, and puts the Hub client's
    every request through the hub guard (:mod:`models_registry.hub_guard`).
    """

    name = "models_registry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # attach and handlers register the job types
        from models_registry import attach, handlers, hub_guard  # noqa: F401

        hub_guard.install()
