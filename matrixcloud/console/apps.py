from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The web console: templates, static files and the views behind them."""

    name = "matrixcloud.console"
    label = "console"
    verbose_name = "Web console"
