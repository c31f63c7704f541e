"""Review pages, mounted at /review/ (DESIGN §8a)."""

from django.urls import path

from review import bulk_views, data_views, views

app_name = "review"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/live", views.detail_live, name="live"),
    path("<int:pk>/claim", views.claim, name="claim"),
    path("<int:pk>/release", views.release, name="release"),
    path("<int:pk>/decide", views.decide, name="decide"),
    path("<int:pk>/assign", bulk_views.assign, name="assign"),
    path("bulk/confirm", bulk_views.bulk_confirm, name="bulk_confirm"),
    path("bulk/decide", bulk_views.bulk_decide, name="bulk_decide"),
    path("export.jsonl", data_views.export_decisions, name="export"),
    path("stats/", data_views.decision_stats, name="stats"),
]
