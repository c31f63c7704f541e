from datetime import UTC, datetime

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.decorators.http import last_modified
from django.views.i18n import JavaScriptCatalog
from ninja import NinjaAPI

from agentops.api.errors import install_error_handlers
from agentops.api.openapi import build_openapi_once
from agentops.api.parsing import ApiParser
from agentops.keys.auth import ApiKeyAuth
from agentops.ops import views
from agentops.runs import api as runs_api
from budgets import api as budgets_api
from review import api as review_api
from review import hooks as review_hooks

# The agent REST API at /api/v1 (DESIGN.md §8). Routers live beside the state they change: runs in
# agentops/runs/api.py, actions in review/api.py, usage, reservations and budgets in budgets/api.py.
api = NinjaAPI(
    parser=ApiParser(),
    title="agentops",
    version="1",
    description="Runs, permission requests, usage, reservations and budgets for agents. "
    "Authenticate with `Authorization: Bearer <API key>`.",
    urls_namespace="api",
    docs_url="/docs",
    openapi_url="/openapi.json",
    auth=ApiKeyAuth(),
)
install_error_handlers(api)
api.add_router("/runs", runs_api.router)
api.add_router("/actions", review_api.router)
api.add_router("", budgets_api.router)
build_openapi_once(api)

STARTED = datetime.now(tz=UTC).replace(microsecond=0)

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("api/v1/", api.urls),
    path("runs/", include("agentops.runs.urls")),
    path("review/", include("review.urls")),
    # Slack-compatible button presses (signed, not signed in): README "Approvals in chat".
    path("hooks/slack/interactive", review_hooks.slack_interactive, name="slack-interactive"),
    path("", include("budgets.urls")),
    path("agents/", include("agentops.keys.urls")),
    path("ops/", views.ops, name="ops"),
    path("ops/status", views.ops_status, name="ops-status"),
    path("ops/breakers/<slug:operation>", views.ops_breaker, name="ops-breaker"),
    path("ops/probe", views.ops_probe, name="ops-probe"),
    path("ops/probe/<str:task_id>", views.ops_probe_result, name="ops-probe-result"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(template_name="registration/login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # The header's language switch posts here (Django's set_language: a cookie, then back to the page).
    path("i18n/", include("django.conf.urls.i18n")),
    # The words of static/js/*.js (the djangojs catalog) as a script file, so the strict CSP holds; a browser
    # revalidates it (304) instead of downloading it on every page of one deployment's process.
    path("jsi18n/", last_modified(lambda request: STARTED)(JavaScriptCatalog.as_view()), name="javascript-catalog"),
]

if settings.AGENTOPS_BENCH_ENDPOINTS:
    urlpatterns += [
        path("_bench/bare", views.bench_bare, name="bench-bare"),
        # the same view through the full browser middleware stack, to keep the lean stack honest
        path("bench-full-stack/bare", views.bench_bare, name="bench-bare-full-stack"),
    ]
