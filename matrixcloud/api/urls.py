"""Platform endpoints, the generated schema and its browser."""

from django.urls import path

from matrixcloud.api import views

urlpatterns = [
    path("v1/health", views.HealthView.as_view(), name="health"),
]
