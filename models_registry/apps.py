"""Models: Hugging Face sources, model profiles and installations."""

from django.apps import AppConfig


class ModelsRegistryConfig(AppConfig):
    """Models: Hugging Face sources, model profiles and installations.

    ``ready()`` registers the model job types (``model.inspect``, ``model.pull``,
    ``model.preload``, ``model.attach``) with the job engine.
    """

    name = "models_registry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from models_registry import attach, handlers  # noqa: F401  (registers the job types)
