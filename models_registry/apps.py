"""Models: Hugging Face sources, model profiles and installations."""

from django.apps import AppConfig


class ModelsRegistryConfig(AppConfig):
    """Models: Hugging Face sources, model profiles and installations."""

    name = "models_registry"
    default_auto_field = "django.db.models.BigAutoField"
