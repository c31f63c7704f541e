"""Budget admin screens under /budgets/ and the cost dashboard under /costs/ (DESIGN §8a)."""

from django.urls import path

from budgets import views

app_name = "budgets"

urlpatterns = [
    path("budgets/", views.budget_list, name="list"),
    path("budgets/new/", views.budget_create, name="create"),
    path("budgets/<int:pk>/edit/", views.budget_edit, name="edit"),
    path("budgets/<int:pk>/delete/", views.budget_delete, name="delete"),
    path("budgets/prices/", views.prices, name="prices"),
    path("budgets/prices/<int:pk>/delete", views.price_delete, name="price_delete"),
    path("budgets/webhooks/", views.webhooks, name="webhooks"),
    path("budgets/webhooks/settings", views.alert_settings, name="alert_settings"),
    path("budgets/webhooks/<int:pk>/", views.webhook_edit, name="webhook_edit"),
    path("budgets/webhooks/<int:pk>/delete", views.webhook_delete, name="webhook_delete"),
    path("budgets/webhooks/<int:pk>/test", views.webhook_test, name="webhook_test"),
    path("budgets/alerts/", views.alerts, name="alerts"),
    path("budgets/alerts/badge", views.alert_badge, name="alert_badge"),
    path("budgets/alerts/acknowledge-all", views.alerts_acknowledge_all, name="acknowledge_all"),
    path("budgets/alerts/<int:pk>/acknowledge", views.alert_acknowledge, name="acknowledge"),
    path("costs/", views.costs, name="costs"),
    path("costs/data.json", views.costs_data, name="costs_data"),
]
