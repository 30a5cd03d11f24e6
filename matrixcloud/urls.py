"""URL map: the API under /v1/, the schema, the docs, admin, the web console."""

from django.contrib import admin
from django.urls import include, path, re_path

from matrixcloud.api.fallback import api_not_found
from matrixcloud.api.schema import DocsView, SchemaView

handler400 = "matrixcloud.api.fallback.bad_request"
handler500 = "matrixcloud.api.fallback.server_error"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("matrixcloud.platform.urls")),
    path("v1/", include("accounts.api.urls")),
    path("v1/", include("runtimes.api.urls")),
    path("v1/", include("jobs.api.urls")),
    path("v1/", include("models_registry.api.urls")),
    path("v1/", include("sandbox.api.urls")),
    path("openapi.yaml", SchemaView.as_view(), name="openapi-schema"),
    path("docs", DocsView.as_view(), name="api-docs"),
    re_path(r"^v1(?:/.*)?$", api_not_found),
    path("", include("matrixcloud.console.urls")),
]
