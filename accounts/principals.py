"""The acting party of a request: who, in which workspace, with what role, from where.

Every view that reads or writes workspace data asks ``actor_for(request)``. Who may
reach what:

- A user acts in the workspace of their session (or the console's chosen one), with
  their role there, and sees nothing of any other workspace.
- The operator (the operator token, ``MATRIX_RUNTIME_API_TOKEN``, and nothing else)
  acts in the workspace named by ``X-Matrix-Workspace`` (slug or id), else the
  ``local`` workspace; without the header its reads span every workspace.
- The anonymous local-dev caller (loopback, local-dev, no operator token) is the Owner
  of the ``local`` workspace and of nothing else: an ``X-Matrix-Workspace`` naming any
  other workspace is a 404 (the same answer whether it exists or not, as for any other
  workspace's object), and audit records name it ``local-dev``.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.http import HttpRequest
from rest_framework.request import Request

from accounts.choices import Role
from accounts.models import Membership, SessionToken, User, Workspace
from matrixcloud.errors import Forbidden, NotFound, Unauthorized
from matrixcloud.lib.addresses import client_ip

OPERATOR_ROLE = "Operator"
OPERATOR_ACTOR = "operator"
LOCAL_DEV_ACTOR = "local-dev"
SYSTEM_ACTOR = "system"
WORKSPACE_HEADER = "X-Matrix-Workspace"
LOCAL_WORKSPACE_SLUG = "local"


def local_workspace() -> Workspace:
    """The local workspace (made on first use): anonymous local-dev callers on loopback
    act as its Owner, and the operator acts in it when no ``X-Matrix-Workspace`` names
    another."""
    workspace, _ = Workspace.objects.get_or_create(
        slug=LOCAL_WORKSPACE_SLUG, defaults={"name": "Local"}
    )
    return workspace


@dataclass(frozen=True)
class Actor:
    """The party a service acts for; ``user`` is None for the operator and for the
    anonymous local-dev caller (``local_dev``: the local workspace's Owner, unscoped
    never). ``ip`` is the caller's address, "" where there is none."""

    workspace: Workspace
    role: str
    user: User | None = None
    session: SessionToken | None = None
    member: Membership | None = None
    # False for an operator who named no workspace: reads then span every workspace.
    scoped: bool = True
    local_dev: bool = False
    ip: str = ""
    # How audit records name a party that is not a request's (see the constructors).
    audit_name: str = ""

    @classmethod
    def operator(cls, workspace: Workspace, *, name: str = OPERATOR_ACTOR, ip: str = "") -> Actor:
        """The operator outside a request, acting in ``workspace``: a management command
        (audited ``operator``) or a superuser in the Django admin (``name`` says how)."""
        return cls(workspace=workspace, role=OPERATOR_ROLE, audit_name=name, ip=ip)

    @classmethod
    def system(cls, workspace: Workspace, *, name: str = SYSTEM_ACTOR) -> Actor:
        """MatrixCloud itself acting in ``workspace`` (no caller, no address), with the
        operator's reach."""
        return cls(workspace=workspace, role=OPERATOR_ROLE, audit_name=name)

    @classmethod
    def job_creator(cls, workspace_id: str, user_id: str | None) -> Actor:
        """A job acting for the user who created it, outside any request, with their
        role in the workspace now ("" when they are no longer a member); a job with no
        creator (the operator's, the local-dev Owner's) acts as the system."""
        workspace = Workspace.objects.get(pk=workspace_id)
        if user_id is None:
            return cls.system(workspace)
        member = (
            Membership.objects.filter(user_id=user_id, workspace=workspace)
            .select_related("user")
            .first()
        )
        user = member.user if member is not None else User.objects.get(pk=user_id)
        role = member.role if member is not None else ""
        return cls(workspace=workspace, role=role, user=user, member=member)

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR_ROLE

    @property
    def id(self) -> str:
        """How audit records name this actor."""
        if self.audit_name:
            return self.audit_name
        if self.user is not None:
            return str(self.user.pk)
        return LOCAL_DEV_ACTOR if self.local_dev else OPERATOR_ACTOR

    @property
    def can_manage(self) -> bool:
        return self.is_operator or self.role in Role.managers()

    @property
    def visible_workspace(self) -> Workspace | None:
        """The workspace reads are limited to; None means all (the operator)."""
        return self.workspace if self.scoped else None

    def membership(self) -> Membership:
        if self.member is None:
            raise Unauthorized("not authenticated")
        return self.member

    def require_manager(self, what: str) -> None:
        if not self.can_manage:
            raise Forbidden(f"only a workspace Owner or Admin may {what}")


def _operator_workspace(request: Request) -> Workspace:
    wanted = request.headers.get(WORKSPACE_HEADER, "").strip()
    if not wanted:
        return local_workspace()
    workspace = (
        Workspace.objects.filter(slug=wanted).first() or Workspace.objects.filter(pk=wanted).first()
    )
    if workspace is None:
        raise NotFound(f"no workspace {wanted!r}")
    return workspace


def _local_dev_workspace(request: Request) -> Workspace:
    """The local workspace; a header naming any other is a 404 that says why."""
    workspace = local_workspace()
    wanted = request.headers.get(WORKSPACE_HEADER, "").strip()
    if wanted and wanted not in (workspace.slug, workspace.pk):
        raise NotFound(
            f"no workspace {wanted!r} for this caller: anonymous local-dev access acts in "
            f"the {workspace.slug!r} workspace only (other workspaces need a session or "
            "the operator token)"
        )
    return workspace


def actor_for(request: Request) -> Actor:
    """The actor of an authenticated request (the gate has already let it through)."""
    user, ip = request.user, client_ip(request._request)
    if getattr(user, "is_local_dev", False):
        workspace = _local_dev_workspace(request)
        return Actor(workspace=workspace, role=Role.OWNER, local_dev=True, ip=ip)
    if getattr(user, "is_operator", False):
        named = bool(request.headers.get(WORKSPACE_HEADER, "").strip())
        workspace = _operator_workspace(request)
        return Actor(workspace=workspace, role=OPERATOR_ROLE, scoped=named, ip=ip)
    if not isinstance(user, User):
        raise Unauthorized("not authenticated")
    session = request.auth if isinstance(request.auth, SessionToken) else None
    workspace_id = session.workspace_id if session else _console_workspace_id(request, user)
    membership = (
        Membership.objects.select_related("workspace")
        .filter(user=user, workspace_id=workspace_id)
        .first()
    )
    if membership is None:
        raise Forbidden("you are not a member of this workspace")
    return Actor(
        workspace=membership.workspace,
        role=membership.role,
        user=user,
        session=session,
        member=membership,
        ip=ip,
    )


def admin_operator(request: HttpRequest, workspace: Workspace) -> Actor:
    """A superuser acting through a Django admin action on ``workspace``'s rows, audited
    by their user id."""
    name = str(getattr(request.user, "pk", "") or OPERATOR_ACTOR)
    return Actor.operator(workspace, name=name, ip=client_ip(request))


def user_actor(request: Request) -> Actor:
    """Like ``actor_for`` but only a signed-in user will do (``/v1/auth/me`` and such)."""
    if not isinstance(request.user, User):
        raise Unauthorized("not authenticated")
    return actor_for(request)


def _console_workspace_id(request: Request, user: User) -> str | None:
    chosen = (
        request._request.session.get("workspace_id")
        if hasattr(request._request, "session")
        else None
    )
    if chosen:
        return str(chosen)
    first = Membership.objects.filter(user=user).order_by("created_at", "pk").first()
    return first.workspace_id if first else None
