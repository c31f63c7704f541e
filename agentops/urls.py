from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from agentops import views
from agentops.api import api

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("api/v1/", api.urls),
    path("runs/", include("agentops.runs_urls")),
    path("review/", include("review.urls")),
    path("", include("budgets.urls")),
    path("ops/", views.ops, name="ops"),
    path("ops/status", views.ops_status, name="ops-status"),
    path("ops/breakers/<str:name>/<slug:operation>", views.ops_breaker, name="ops-breaker"),
    path("ops/probe", views.ops_probe, name="ops-probe"),
    path("ops/probe/<str:task_id>", views.ops_probe_result, name="ops-probe-result"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(template_name="registration/login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]

if settings.AGENTOPS_BENCH_ENDPOINTS:
    urlpatterns += [
        path("_bench/bare", views.bench_bare, name="bench-bare"),
        # the same view through the full browser middleware stack, to keep the lean stack honest
        path("bench-full-stack/bare", views.bench_bare, name="bench-bare-full-stack"),
    ]
