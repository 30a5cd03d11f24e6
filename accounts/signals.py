"""What makes a cached caller stale: any change to who a credential is, or may reach.

Web processes keep the callers they recognised (sandbox/api/fastcall.py) under the
credentials generation (matrixcloud/lib/generations.py). Saving or deleting a user,
membership, workspace or session token bumps it once the change commits; the services
that revoke tokens in bulk (``QuerySet.update``, which sends no signal) bump it
themselves with :func:`credentials_changed`.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from accounts.models import Membership, SessionToken, User, Workspace
from matrixcloud.lib.generations import CREDENTIALS, generation_bump

WATCHED = (User, Membership, Workspace, SessionToken)


def credentials_changed() -> None:
    """Every cached caller must be recognised again (after this transaction commits)."""
    generation_bump(CREDENTIALS)


def _changed(sender: Any, **kwargs: Any) -> None:
    if kwargs.get("raw"):  # loaddata
        return
    update_fields = kwargs.get("update_fields")
    if sender is User and update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # a sign-in changes nothing a cached caller depends on
    credentials_changed()


def connect() -> None:
    for model in WATCHED:
        post_save.connect(_changed, sender=model, dispatch_uid=f"credentials.{model.__name__}.save")
        post_delete.connect(
            _changed, sender=model, dispatch_uid=f"credentials.{model.__name__}.delete"
        )
