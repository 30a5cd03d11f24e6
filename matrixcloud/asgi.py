"""ASGI entry point: the API, SSE streams, admin and console, with static files."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "matrixcloud.settings")

import django
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

django.setup(set_prefix=False)

import re  # noqa: E402

from django.conf import settings  # noqa: E402

from matrixcloud.lib.fastroutes import FastRoutes, MemoizedGet, Route  # noqa: E402
from matrixcloud.lib.lanes import LanedASGIHandler  # noqa: E402  (needs the apps loaded)
from sandbox.api import fastcall  # noqa: E402

# Requests answered on the event loop from what Django left behind (fastroutes.py).
FAST_ROUTES = [
    Route("GET", re.compile(r"/v1/health"), MemoizedGet()),
    Route(
        "POST",
        re.compile(r"/v1/sandbox/sessions/(?P<session_id>[A-Za-z0-9_-]{1,64})/tools/call"),
        fastcall.tool_call,
        max_body=settings.MATRIX_MAX_BODY_BYTES,
    ),
]

application = FastRoutes(ASGIStaticFilesHandler(LanedASGIHandler()), FAST_ROUTES)
