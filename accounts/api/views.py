"""Views of ``/v1/auth`` and of the workspace's providers, usage and audit (``/v1/cloud``)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.serializers import (
    AuditLogSerializer,
    AuthResultSerializer,
    CurrentUserSerializer,
    ForgotPasswordSerializer,
    LoginSerializer,
    OkMessageSerializer,
    OkSerializer,
    ProviderCredentialCreateSerializer,
    ProviderCredentialListSerializer,
    ProviderCredentialResultSerializer,
    ResetPasswordSerializer,
    SignupSerializer,
    UsageSerializer,
    VerifyEmailSerializer,
)
from matrixcloud.api.schema import (
    OptionalSessionSchema,
    PublicSchema,
    SessionSchema,
    error_responses,
)
from matrixcloud.api.stubs import PendingView

# /v1/auth/* is outside the gate (as in the original): each endpoint does its own checks.
OPEN_AUTHENTICATION: list[type] = []
OPEN_PERMISSIONS = [AllowAny]


class SignupView(PendingView):
    """Create a workspace and its owner, and start a session."""

    capability = "accounts and sessions"
    authentication_classes = OPEN_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = PublicSchema()

    @extend_schema(
        operation_id="auth_signup",
        summary="Create a workspace + owner account (multitenant)",
        request=SignupSerializer,
        responses={
            201: AuthResultSerializer,
            **error_responses(400, (409, "An account with this email already exists")),
        },
    )
    def post(self, request: Request) -> Response:
        self.pending(request, SignupSerializer)


class LoginView(PendingView):
    """Check an email and password, and start a session."""

    capability = "accounts and sessions"
    authentication_classes = OPEN_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = PublicSchema()

    @extend_schema(
        operation_id="auth_login",
        summary="Authenticate and start a session",
        request=LoginSerializer,
        responses={
            200: AuthResultSerializer,
            **error_responses(400, (401, "Invalid email or password")),
        },
    )
    def post(self, request: Request) -> Response:
        self.pending(request, LoginSerializer)


class MeView(PendingView):
    """The user behind the bearer session (401 for anything else, the operator token too)."""

    capability = "accounts and sessions"
    authentication_classes = OPEN_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = SessionSchema()

    @extend_schema(
        operation_id="auth_me",
        summary="Current authenticated user",
        responses={200: CurrentUserSerializer, **error_responses((401, "Not authenticated"))},
    )
    def get(self, request: Request) -> Response:
        self.pending(request)


class LogoutView(PendingView):
    """End the bearer session, or all of the user's sessions; always succeeds."""

    capability = "accounts and sessions"
    authentication_classes = OPEN_AUTHENTICATION
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
        self.pending(request)


class ForgotPasswordView(PendingView):
    """Email a password-reset link; the same answer whether or not the account exists."""

    capability = "password reset"
    authentication_classes = OPEN_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = PublicSchema()

    @extend_schema(
        operation_id="auth_forgot",
        summary="Request a password-reset email (always 200)",
        request=ForgotPasswordSerializer,
        responses={200: OkMessageSerializer, **error_responses(400)},
    )
    def post(self, request: Request) -> Response:
        self.pending(request, ForgotPasswordSerializer)


class ResetPasswordView(PendingView):
    """Set a new password from a reset token; ends every session of the user."""

    capability = "password reset"
    authentication_classes = OPEN_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = PublicSchema()

    @extend_schema(
        operation_id="auth_reset",
        summary="Set a new password from a reset token",
        request=ResetPasswordSerializer,
        responses={
            200: OkMessageSerializer,
            **error_responses((400, "Invalid or expired token")),
        },
    )
    def post(self, request: Request) -> Response:
        self.pending(request, ResetPasswordSerializer)


class VerifyEmailView(PendingView):
    """Confirm an email address from a verification token."""

    capability = "email verification"
    authentication_classes = OPEN_AUTHENTICATION
    permission_classes = OPEN_PERMISSIONS
    schema = PublicSchema()

    @extend_schema(
        operation_id="auth_verify",
        summary="Confirm an email-verification token",
        request=VerifyEmailSerializer,
        responses={
            200: OkMessageSerializer,
            **error_responses((400, "Invalid or expired token")),
        },
    )
    def post(self, request: Request) -> Response:
        self.pending(request, VerifyEmailSerializer)


class ProviderCredentialCollectionView(PendingView):
    """The workspace's provider credentials: list them (hints only), store one."""

    capability = "provider credentials"

    @extend_schema(
        operation_id="cloud_providers_list",
        summary="List BYO provider credentials (hints only)",
        responses={200: ProviderCredentialListSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        self.pending(request)

    @extend_schema(
        operation_id="cloud_providers_create",
        summary="Store a BYO provider token (encrypted at rest)",
        request=ProviderCredentialCreateSerializer,
        responses={
            201: ProviderCredentialResultSerializer,
            **error_responses(400, 401, 403),
        },
    )
    def post(self, request: Request) -> Response:
        self.pending(request, ProviderCredentialCreateSerializer)


class UsageView(PendingView):
    """The workspace's metered usage over the last 30 days."""

    capability = "usage metering"

    @extend_schema(
        operation_id="cloud_usage",
        summary="30-day usage metering by kind",
        responses={200: UsageSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        self.pending(request)


class AuditLogView(PendingView):
    """The workspace's recent audit events."""

    capability = "the audit log"

    @extend_schema(
        operation_id="cloud_audit",
        summary="Recent audit events for the workspace",
        responses={200: AuditLogSerializer, **error_responses(401)},
    )
    def get(self, request: Request) -> Response:
        self.pending(request)
