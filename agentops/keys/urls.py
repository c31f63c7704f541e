"""The Agents screen, mounted at /agents/ (agentops/keys/views.py)."""

from django.urls import path

from agentops.keys import views

app_name = "agents"

urlpatterns = [
    path("", views.agent_list, name="list"),
    path("<slug:name>/", views.agent_detail, name="detail"),
    path("<slug:name>/keys/", views.key_create, name="key_create"),
    path("<slug:name>/keys/<int:key_id>/", views.key_limits, name="key_limits"),
    path("<slug:name>/keys/<int:key_id>/revoke", views.key_revoke, name="key_revoke"),
]
