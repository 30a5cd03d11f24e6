"""ASGI entry point: the API, SSE streams, admin and console, with static files."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "matrixcloud.settings")

import django
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

django.setup(set_prefix=False)

from matrixcloud.lib.lanes import LanedASGIHandler  # noqa: E402  (needs the apps loaded)

application = ASGIStaticFilesHandler(LanedASGIHandler())
