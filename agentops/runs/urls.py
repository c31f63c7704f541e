"""Runs pages, mounted at /runs/ (DESIGN §8a)."""

from django.urls import path

from agentops.runs import views as runs_views

app_name = "runs"

urlpatterns = [
    path("", runs_views.run_list, name="list"),
    path("<int:run_id>/", runs_views.run_detail, name="detail"),
    path("<int:run_id>/live", runs_views.run_live, name="live"),
    path("<int:run_id>/notices", runs_views.run_notices, name="notices"),
    path("<int:run_id>/cancel", runs_views.run_cancel, name="cancel"),
    path("<int:run_id>/retry", runs_views.run_retry, name="retry"),
]
