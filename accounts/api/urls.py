"""API routes of the accounts app: auth, and the workspace's providers, usage and audit."""

from django.urls import URLPattern, path

from accounts.api import cloud, views

urlpatterns: list[URLPattern] = [
    path("auth/signup", views.SignupView.as_view(), name="auth-signup"),
    path("auth/login", views.LoginView.as_view(), name="auth-login"),
    path("auth/me", views.MeView.as_view(), name="auth-me"),
    path("auth/logout", views.LogoutView.as_view(), name="auth-logout"),
    path("auth/forgot", views.ForgotPasswordView.as_view(), name="auth-forgot"),
    path("auth/reset", views.ResetPasswordView.as_view(), name="auth-reset"),
    path("auth/verify", views.VerifyEmailView.as_view(), name="auth-verify"),
    path("auth/verify/resend", views.ResendVerificationView.as_view(), name="auth-verify-resend"),
    path("auth/invitations", views.InvitationCollectionView.as_view(), name="auth-invitations"),
    path(
        "auth/invitations/accept",
        views.InvitationAcceptView.as_view(),
        name="auth-invitations-accept",
    ),
    path("auth/members", views.MemberListView.as_view(), name="auth-members"),
    path(
        "cloud/providers",
        cloud.ProviderCredentialCollectionView.as_view(),
        name="cloud-providers",
    ),
    path(
        "cloud/providers/<str:credential_id>",
        cloud.ProviderCredentialDetailView.as_view(),
        name="cloud-provider",
    ),
    path("cloud/usage", cloud.UsageView.as_view(), name="cloud-usage"),
    path("cloud/audit", cloud.AuditLogView.as_view(), name="cloud-audit"),
]
