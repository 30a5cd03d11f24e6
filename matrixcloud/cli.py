"""The ``matrixcloud`` console script: ``matrixcloud [serve options]`` or any manage.py command."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "matrixcloud.settings")
    from django.core.management import execute_from_command_line

    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        args = ["serve", *args]
    execute_from_command_line(["matrixcloud", *args])
