"""Review pages, mounted at /review/ (DESIGN §8a)."""

from django.urls import path

from review import bulk_views, data_views, filter_views, mail_views, suggestion_views, views

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
    path("settings/", mail_views.reviewer_settings, name="settings"),
    path("settings/test-mail", mail_views.send_test_mail, name="test_mail"),
    path("mail/", mail_views.mail_link, name="mail_link"),
    path("filters/", filter_views.save_filter, name="save_filter"),
    path("filters/<int:pk>/delete", filter_views.delete_filter, name="delete_filter"),
    path("suggestions/", suggestion_views.suggestions_page, name="suggestions"),
    path("suggestions/apply", suggestion_views.apply, name="suggestion_apply"),
    path("suggestions/dismiss", suggestion_views.dismiss, name="suggestion_dismiss"),
    path("suggestions/changes/<int:pk>/undo", suggestion_views.undo, name="suggestion_undo"),
]
