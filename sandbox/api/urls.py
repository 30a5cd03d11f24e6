"""API routes of the sandbox app."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
