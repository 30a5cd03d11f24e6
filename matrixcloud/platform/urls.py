"""Platform endpoints under /v1/."""

from django.urls import path

from matrixcloud.platform import views

urlpatterns = [
    path("v1/health", views.HealthView.as_view(), name="platform-health"),
    path("v1/version", views.VersionView.as_view(), name="platform-version"),
    path("v1/ready", views.ReadyView.as_view(), name="platform-ready"),
    path("v1/capabilities", views.CapabilitiesView.as_view(), name="platform-capabilities"),
    path("v1/runtimes", views.RuntimesView.as_view(), name="platform-runtimes"),
    path("v1/catalog", views.CatalogView.as_view(), name="platform-catalog"),
    path("v1/policies", views.PoliciesView.as_view(), name="platform-policies"),
    path("v1/system/storage", views.StorageView.as_view(), name="platform-system-storage"),
]
