"""API routes of the models_registry app."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
