"""ASGI entry point: the API, SSE streams, admin and console, with static files."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "matrixcloud.settings")

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

application = ASGIStaticFilesHandler(get_asgi_application())
