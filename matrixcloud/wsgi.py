"""WSGI entry point (plain request/response only; SSE needs the ASGI server)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "matrixcloud.settings")

application = get_wsgi_application()
