"""API routes of the runtimes app: registered runtimes and join tokens."""

from django.urls import URLPattern, path

from runtimes.api import views

urlpatterns: list[URLPattern] = [
    path("cloud/runtimes", views.RegisteredRuntimeListView.as_view(), name="cloud-runtimes"),
    path(
        "cloud/runtimes/register",
        views.RuntimeRegisterView.as_view(),
        name="cloud-runtime-register",
    ),
    path(
        "cloud/runtimes/heartbeat",
        views.RuntimeHeartbeatView.as_view(),
        name="cloud-runtime-heartbeat",
    ),
    path(
        "cloud/runtimes/<str:runtime_id>",
        views.RegisteredRuntimeDetailView.as_view(),
        name="cloud-runtime",
    ),
    path(
        "cloud/runtimes/<str:runtime_id>/token/rotate",
        views.RuntimeTokenRotateView.as_view(),
        name="cloud-runtime-token-rotate",
    ),
    path(
        "cloud/runtimes/<str:runtime_id>/token/revoke",
        views.RuntimeTokenRevokeView.as_view(),
        name="cloud-runtime-token-revoke",
    ),
    path("cloud/join-tokens", views.JoinTokenCollectionView.as_view(), name="cloud-join-tokens"),
    path(
        "cloud/join-tokens/<str:token_id>/revoke",
        views.JoinTokenRevokeView.as_view(),
        name="cloud-join-token-revoke",
    ),
]
