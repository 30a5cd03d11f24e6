from django.apps import AppConfig


class ImporterConfig(AppConfig):
    """The importer of the original's database: its one table records which rows it made."""

    name = "matrixcloud.importer"
    label = "importer"
    verbose_name = "Import from the original"
