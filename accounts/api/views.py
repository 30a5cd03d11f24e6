"""Views of ``/v1/auth`` (the workspace's providers, usage and audit: ``accounts.api.cloud``)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import logout as django_logout
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.base import ActorAPIView
from accounts.api.serializers import (
    AuthResultSerializer,
    CurrentUserSerializer,
    ForgotPasswordSerializer,
    InvitationAcceptSerializer,
    InvitationCreateSerializer,
    InvitationListSerializer,
    InvitationResultSerializer,
    InvitationSerializer,
    LoginSerializer,
    MemberListSerializer,
    MemberSerializer,
    OkMessageSerializer,
    OkSerializer,
    ResetPasswordSerializer,
    SignupSerializer,
    VerifyEmailSerializer,
)
from accounts.authentication import ConsoleSessionAuthentication, SessionTokenAuthentication
from accounts.choices import Role
from accounts.models import SessionToken, User
from accounts.principals import user_actor
from accounts.selectors import (
    invitations_pending,
    members_of,
)
from accounts.services import (
    IssuedSession,
    email_verification_resend,
    email_verify,
    invitation_accept,
    invitation_create,
    password_reset_complete,
    password_reset_request,
    session_revoke,
    session_revoke_all,
    user_login,
    user_signup,
)
from matrixcloud.api.schema import (
    OptionalSessionSchema,
    PublicSchema,
    SessionSchema,
    error_responses,
)
from matrixcloud.api.serializers import validated
from matrixcloud.lib.addresses import client_ip

# /v1/auth/* is outside the gate, as in the original (docs/COMPATIBILITY.md#c-05): each
# endpoint does its own checks.
OPEN_AUTHENTICATION: list[type] = []
OPEN_PERMISSIONS = [AllowAny]
# Endpoints about "me" accept a user's session (bearer or console cookie), never the operator.
USER_AUTHENTICATION = [SessionTokenAuthentication, ConsoleSessionAuthentication]
FORGOT_MESSAGE = "If an account exists for that email, a reset link is on its way."


def _meta(request: Request) -> dict[str, str]:
    return {
        "ip": client_ip(request._request),
        "user_agent": request.headers.get("User-Agent", "")[:300],
    }


def _auth_result(issued: IssuedSession) -> dict[str, Any]:
    return dict(AuthResultSerializer(issued).data)


class SignupView(APIView):
    """Create a workspace and its owner, and start a session."""

    authentication_classes = OPEN_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = PublicSchema()

    @extend_schema(
        operation_id="auth_signup",
        summary="Create a workspace + owner account (multitenant)",
        request=SignupSerializer,
        responses={
            201: AuthResultSerializer,
            **error_responses(400, (409, "An account with this email already exists"), 429),
        },
    )
    def post(self, request: Request) -> Response:
        data = validated(SignupSerializer, request.data)
        issued = user_signup(
            name=data["name"],
            email=data["email"],
            password=data["password"],
            workspace_name=data.get("workspace", ""),
            **_meta(request),
        )
        return Response(_auth_result(issued), status=201)


class LoginView(APIView):
    """Check an email and password, and start a session."""

    authentication_classes = OPEN_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = PublicSchema()

    @extend_schema(
        operation_id="auth_login",
        summary="Authenticate and start a session",
        request=LoginSerializer,
        responses={
            200: AuthResultSerializer,
            **error_responses(400, (401, "Invalid email or password"), 403, 429),
        },
    )
    def post(self, request: Request) -> Response:
        data = validated(LoginSerializer, request.data)
        issued = user_login(email=data["email"], password=data["password"], **_meta(request))
        return Response(_auth_result(issued))


class MeView(APIView):
    """The user behind the bearer session (401 for anything else, the operator token too)."""

    authentication_classes = USER_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = SessionSchema()

    @extend_schema(
        operation_id="auth_me",
        summary="Current authenticated user",
        responses={200: CurrentUserSerializer, **error_responses((401, "Not authenticated"))},
    )
    def get(self, request: Request) -> Response:
        actor = user_actor(request)
        return Response(CurrentUserSerializer(actor.membership()).data)


class LogoutView(APIView):
    """End the bearer session, or all of the user's sessions; always succeeds."""

    authentication_classes = USER_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = OptionalSessionSchema()

    @extend_schema(
        operation_id="auth_logout",
        summary="End the current session (?all=true ends every session)",
        parameters=[
            OpenApiParameter(
                "all",
                OpenApiTypes.BOOL,
                OpenApiParameter.QUERY,
                description="true: end every session of the user.",
            )
        ],
        request=None,
        responses={200: OkSerializer},
    )
    def post(self, request: Request) -> Response:
        everywhere = request.query_params.get("all", "").lower() in ("true", "1")
        if isinstance(request.auth, SessionToken):
            session_revoke(
                session=request.auth, everywhere=everywhere, ip=client_ip(request._request)
            )
        elif isinstance(request.user, User) and hasattr(request._request, "session"):
            if everywhere:
                session_revoke_all(user=request.user, ip=client_ip(request._request))
            django_logout(request._request)
        return Response({"ok": True})


class ForgotPasswordView(APIView):
    """Email a password-reset link; the same answer whether or not the account exists."""

    authentication_classes = OPEN_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = PublicSchema()

    @extend_schema(
        operation_id="auth_forgot",
        summary="Request a password-reset email (always 200)",
        request=ForgotPasswordSerializer,
        responses={200: OkMessageSerializer, **error_responses(400, 429)},
    )
    def post(self, request: Request) -> Response:
        data = validated(ForgotPasswordSerializer, request.data)
        password_reset_request(email=data["email"], ip=client_ip(request._request))
        return Response({"ok": True, "message": FORGOT_MESSAGE})


class ResetPasswordView(APIView):
    """Set a new password from a reset token; ends every session of the user."""

    authentication_classes = OPEN_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = PublicSchema()

    @extend_schema(
        operation_id="auth_reset",
        summary="Set a new password from a reset token",
        request=ResetPasswordSerializer,
        responses={
            200: OkMessageSerializer,
            **error_responses((400, "Invalid or expired token"), 429),
        },
    )
    def post(self, request: Request) -> Response:
        data = validated(ResetPasswordSerializer, request.data)
        password_reset_complete(
            token=data["token"], password=data["password"], ip=client_ip(request._request)
        )
        return Response({"ok": True, "message": "Your password has been updated. Please sign in."})


class VerifyEmailView(APIView):
    """Confirm an email address from a verification token."""

    authentication_classes = OPEN_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = PublicSchema()

    @extend_schema(
        operation_id="auth_verify",
        summary="Confirm an email-verification token",
        request=VerifyEmailSerializer,
        responses={
            200: OkMessageSerializer,
            **error_responses((400, "Invalid or expired token"), 429),
        },
    )
    def post(self, request: Request) -> Response:
        data = validated(VerifyEmailSerializer, request.data)
        email_verify(token=data["token"], ip=client_ip(request._request))
        return Response({"ok": True, "message": "Email verified."})


class ResendVerificationView(APIView):
    """Email a fresh verification link to the signed-in user (additive endpoint)."""

    authentication_classes = USER_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = SessionSchema()

    @extend_schema(
        operation_id="auth_verify_resend",
        summary="Send a new email-verification link to the signed-in user",
        request=None,
        responses={200: OkMessageSerializer, **error_responses(401, 429)},
    )
    def post(self, request: Request) -> Response:
        actor = user_actor(request)
        assert actor.user is not None
        sent = email_verification_resend(user=actor.user)
        message = "A new verification link is on its way." if sent else "Email already verified."
        return Response({"ok": True, "message": message})


class InvitationCollectionView(ActorAPIView):
    """Invitations into the caller's workspace: list pending ones, invite someone."""

    schema = SessionSchema()

    @extend_schema(
        operation_id="auth_invitations_list",
        summary="Pending invitations of the workspace (Owner or Admin)",
        responses={200: InvitationListSerializer, **error_responses(401, 403)},
    )
    def get(self, request: Request) -> Response:
        actor = self.actor
        actor.require_manager("see invitations")
        pending = invitations_pending(workspace=actor.workspace)
        return Response({"invitations": InvitationSerializer(pending, many=True).data})

    @extend_schema(
        operation_id="auth_invitations_create",
        summary="Invite someone into the workspace (Owner or Admin; emailed link)",
        request=InvitationCreateSerializer,
        responses={
            201: InvitationResultSerializer,
            **error_responses(400, 401, 403, (409, "Already a member"), 429),
        },
    )
    def post(self, request: Request) -> Response:
        actor = self.actor
        actor.require_manager("invite members")
        data = validated(InvitationCreateSerializer, request.data)
        invitation, _secret = invitation_create(
            actor=actor,
            email=data["email"],
            role=data.get("role", Role.MEMBER),
        )
        return Response({"invitation": InvitationSerializer(invitation).data}, status=201)


class InvitationAcceptView(APIView):
    """Accept an invitation: join the workspace (creating the account if needed)."""

    authentication_classes = OPEN_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = PublicSchema()

    @extend_schema(
        operation_id="auth_invitations_accept",
        summary="Accept an invitation and start a session in its workspace",
        request=InvitationAcceptSerializer,
        responses={
            200: AuthResultSerializer,
            **error_responses(400, 401, (404, "Invalid or expired invitation"), 429),
        },
    )
    def post(self, request: Request) -> Response:
        data = validated(InvitationAcceptSerializer, request.data)
        issued = invitation_accept(
            token=data["token"],
            password=data["password"],
            name=data.get("name", ""),
            **_meta(request),
        )
        return Response(_auth_result(issued))


class MemberListView(ActorAPIView):
    """The members of the caller's workspace and their roles."""

    schema = SessionSchema()

    @extend_schema(
        operation_id="auth_members_list",
        summary="Members of the workspace",
        responses={200: MemberListSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        actor = self.actor
        members = members_of(workspace=actor.workspace)
        return Response({"members": MemberSerializer(members, many=True).data})
