"""The base of every domain API view that acts for someone.

``ActorAPIView`` resolves the request's ``Actor`` (``accounts.principals.actor_for``)
once, on first use of ``self.actor``, and keeps it for the rest of the request; views
hand it whole to the services they call.
"""

from __future__ import annotations

from functools import cached_property

from rest_framework.views import APIView

from accounts.principals import Actor, actor_for


class ActorAPIView(APIView):
    """An API view whose handlers act as ``self.actor`` (who, which workspace, from
    where), resolved once per request."""

    @cached_property
    def actor(self) -> Actor:
        return actor_for(self.request)
