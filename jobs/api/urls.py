"""API routes of the jobs app (included under ``v1/``)."""

from django.urls import URLPattern, path

from jobs.api import views

urlpatterns: list[URLPattern] = [
    path("jobs", views.JobCollectionView.as_view(), name="jobs"),
    path("jobs/<str:job_id>", views.JobDetailView.as_view(), name="job-detail"),
    path("jobs/<str:job_id>/events", views.JobEventsView.as_view(), name="job-events"),
]
