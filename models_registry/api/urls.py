"""API routes of the models_registry app: model sources, profiles, installations."""

from django.urls import URLPattern, path

from models_registry.api import views

urlpatterns: list[URLPattern] = [
    path(
        "model-sources/huggingface/search",
        views.HuggingFaceSearchView.as_view(),
        name="huggingface-search",
    ),
    path("model-sources/resolve", views.ResolveSourceView.as_view(), name="model-source-resolve"),
    path("model-profiles", views.ModelProfileCollectionView.as_view(), name="model-profiles"),
    path(
        "model-profiles/<str:id>/attach",
        views.ModelProfileAttachView.as_view(),
        name="model-profile-attach",
    ),
    path(
        "model-installations",
        views.ModelInstallationListView.as_view(),
        name="model-installations",
    ),
]
