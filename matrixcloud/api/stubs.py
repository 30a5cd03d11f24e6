"""A base for routed endpoints whose capability lands in a later change.

Such an endpoint is already in the URL map and the schema, checks its request body
with its input serializer (bad input is a 400 in the error shape), then answers
501 in the error shape. Replacing the stub with the real view changes no route.
"""

from __future__ import annotations

from typing import ClassVar, NoReturn

from rest_framework.request import Request
from rest_framework.serializers import BaseSerializer
from rest_framework.views import APIView

from matrixcloud.errors import NotImplementedYet


class PendingView(APIView):
    """An endpoint that validates its input, then answers 501 until ``capability`` lands."""

    capability: ClassVar[str] = "a later change"

    def pending(
        self, request: Request, input_serializer: type[BaseSerializer] | None = None
    ) -> NoReturn:
        """Validate ``request.data`` with ``input_serializer`` (if any), then raise the 501."""
        if input_serializer is not None:
            input_serializer(data=request.data).is_valid(raise_exception=True)
        raise NotImplementedYet(f"{request.method} {request.path} lands with {self.capability}")
