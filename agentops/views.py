"""Platform views: home, health, readiness, metrics and the ops page."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from agentops import health, roles
from agentops.observability.process import update_memory_gauge


@login_required
def home(request):
    """`/` sends each user to the first section their role opens."""
    target = roles.home_url_for(request.user)
    if target:
        return redirect(target)
    user_roles = sorted(roles.user_roles(request.user))
    if not user_roles:
        return render(request, "agentops/no_role.html", status=403)
    return render(request, "agentops/home.html", {"roles": user_roles})


@never_cache
@require_GET
async def healthz(request):
    """Process alive. Touches nothing else, so a slow database never fails liveness."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request):
    """PostgreSQL, Redis and the Celery broker reachable; 503 naming each failing part."""
    checks = health.run_checks()
    failing = [check.name for check in checks if not check.ok]
    body = {
        "status": "ok" if not failing else "unavailable",
        "failing": failing,
        "checks": {check.name: check.as_dict() for check in checks},
    }
    return JsonResponse(body, status=503 if failing else 200)


@never_cache
@require_GET
def metrics_view(request):
    """Prometheus scrape: samples of every web and worker process, merged (multiprocess mode)."""
    if settings.METRICS_TOKEN:
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), settings.METRICS_TOKEN.encode()):
            return JsonResponse({"error": {"code": "unauthorized", "message": "Bearer token required"}}, status=401)
    update_memory_gauge()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


@roles.section_required("ops")
def ops(request):
    return render(request, "agentops/ops.html", _ops_context())


@roles.section_required("ops")
def ops_status(request):
    """The live part of the ops page, re-read on every `ops` event and on reconnect."""
    return render(request, "agentops/ops.html#status", _ops_context())


def _ops_context() -> dict:
    return {"checks": health.run_checks(), "workers": health.ping_workers(timeout=0.5)}


async def bench_bare(request):
    """Baseline for benchmarks: the cheapest JSON view Django can serve (enabled only for benches)."""
    return JsonResponse({"status": "ok"})
