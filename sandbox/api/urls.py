"""API routes of the sandbox app: sandbox sessions and MatrixShell."""

from django.urls import URLPattern, path

from sandbox.api import matrixshell, views

urlpatterns: list[URLPattern] = [
    path("sandbox/sessions", views.SandboxCollectionView.as_view(), name="sandbox-sessions"),
    path(
        "sandbox/sessions/<str:session_id>",
        views.SandboxDetailView.as_view(),
        name="sandbox-session",
    ),
    path(
        "sandbox/sessions/<str:session_id>/events",
        views.SandboxEventsView.as_view(),
        name="sandbox-events",
    ),
    path(
        "sandbox/sessions/<str:session_id>/tools",
        views.SandboxToolsView.as_view(),
        name="sandbox-tools",
    ),
    path(
        "sandbox/sessions/<str:session_id>/tools/call",
        views.SandboxToolCallView.as_view(),
        name="sandbox-tool-call",
    ),
    path(
        "matrixshell/status", matrixshell.MatrixShellStatusView.as_view(), name="matrixshell-status"
    ),
    path(
        "matrixshell/install",
        matrixshell.MatrixShellInstallView.as_view(),
        name="matrixshell-install",
    ),
    path("matrixshell/exec", matrixshell.MatrixShellExecView.as_view(), name="matrixshell-exec"),
]
