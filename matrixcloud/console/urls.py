"""Console routes: the account pages at the root (the emailed links land on /verify,
/reset and /invite), everything else under /console/."""

from django.urls import URLPattern, path
from django.views.generic import RedirectView

from matrixcloud.console.views import (
    activity,
    auth,
    cloud,
    jobs,
    models,
    sandboxes,
    shell,
    workspace,
)

app_name = "console"

urlpatterns: list[URLPattern] = [
    path("", RedirectView.as_view(pattern_name="console:overview"), name="root"),
    path("signup", auth.signup, name="signup"),
    path("login", auth.login, name="login"),
    path("logout", auth.logout, name="logout"),
    path("forgot", auth.forgot, name="forgot"),
    path("reset", auth.reset, name="reset"),
    path("verify", auth.verify, name="verify"),
    path("verify/resend", auth.verify_resend, name="verify-resend"),
    path("invite", auth.invite, name="invite"),
    path("console/", workspace.overview, name="overview"),
    path("console/workspace", workspace.switch_workspace, name="switch-workspace"),
    path("console/overview/counts", workspace.overview_counts, name="overview-counts"),
    path("console/activity", activity.activity, name="activity"),
    path("console/catalog", workspace.catalog, name="catalog"),
    path("console/catalog/launch", sandboxes.sandbox_launch, name="catalog-launch"),
    path("console/sandboxes", sandboxes.sandbox_list, name="sandboxes"),
    path("console/sandboxes/<str:session_id>", sandboxes.sandbox_detail, name="sandbox"),
    path("console/sandboxes/<str:session_id>/call", sandboxes.sandbox_call, name="sandbox-call"),
    path(
        "console/sandboxes/<str:session_id>/stop", sandboxes.sandbox_stop_view, name="sandbox-stop"
    ),
    path("console/jobs", jobs.job_list_view, name="jobs"),
    path("console/jobs/<str:job_id>", jobs.job_detail, name="job"),
    path("console/jobs/<str:job_id>/cancel", jobs.job_cancel_view, name="job-cancel"),
    path("console/models", models.models, name="models"),
    path("console/models/import", models.model_import, name="model-import"),
    path("console/models/<str:profile_id>/attach", models.model_attach, name="model-attach"),
    path("console/runtimes", cloud.runtimes, name="runtimes"),
    path(
        "console/runtimes/<str:runtime_id>/remove",
        cloud.runtime_remove_view,
        name="runtime-remove",
    ),
    path(
        "console/runtimes/<str:runtime_id>/token/rotate",
        cloud.runtime_token_rotate_view,
        name="runtime-token-rotate",
    ),
    path(
        "console/runtimes/<str:runtime_id>/token/revoke",
        cloud.runtime_token_revoke_view,
        name="runtime-token-revoke",
    ),
    path(
        "console/join-tokens/<str:token_id>/revoke",
        cloud.join_token_revoke_view,
        name="join-token-revoke",
    ),
    path("console/providers", cloud.providers, name="providers"),
    path(
        "console/providers/<str:credential_id>/delete",
        cloud.provider_delete_view,
        name="provider-delete",
    ),
    path(
        "console/providers/<str:credential_id>/members",
        cloud.provider_members_view,
        name="provider-members",
    ),
    path("console/shell", shell.shell, name="shell"),
    path("console/shell/install", shell.shell_install, name="shell-install"),
    path("console/members", workspace.members, name="members"),
    path("console/audit", workspace.audit, name="audit"),
]
