"""API routes of the runtimes app."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
