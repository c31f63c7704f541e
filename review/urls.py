"""Review pages, mounted at /review/ (DESIGN §8a)."""

from django.urls import path

from review import data_views, suggestion_views, views

app_name = "review"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/live", views.detail_live, name="live"),
    path("<int:pk>/claim", views.claim, name="claim"),
    path("<int:pk>/release", views.release, name="release"),
    path("<int:pk>/decide", views.decide, name="decide"),
    path("export.jsonl", data_views.export_decisions, name="export"),
    path("stats/", data_views.decision_stats, name="stats"),
    path("suggestions/", suggestion_views.suggestions_page, name="suggestions"),
    path("suggestions/apply", suggestion_views.apply, name="suggestion_apply"),
    path("suggestions/dismiss", suggestion_views.dismiss, name="suggestion_dismiss"),
    path("suggestions/changes/<int:pk>/undo", suggestion_views.undo, name="suggestion_undo"),
]
