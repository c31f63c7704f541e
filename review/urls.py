"""Review pages, mounted at /review/ (DESIGN §8a)."""

from importlib.util import find_spec

from django.urls import path

from review import views

app_name = "review"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("<int:pk>/", views.detail, name="detail"),
    path("<int:pk>/live", views.detail_live, name="live"),
    path("<int:pk>/claim", views.claim, name="claim"),
    path("<int:pk>/release", views.release, name="release"),
    path("<int:pk>/decide", views.decide, name="decide"),
]

# Decision data (export and approval stats) lives in review/data_views.py, written separately: mounted
# once it exists.
if find_spec("review.data_views") is not None:
    from review import data_views

    urlpatterns += [
        path("export.jsonl", data_views.export_decisions, name="export"),
        path("stats/", data_views.decision_stats, name="stats"),
    ]
