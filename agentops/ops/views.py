"""Platform views: home, health, readiness, metrics and the ops page. The ops probe runs on a worker
(agentops.ops.tasks), sent by task name."""

from __future__ import annotations

import hmac

import structlog
from celery.result import AsyncResult
from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import DatabaseError
from django.db.models import Count
from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from agentops import wiring
from agentops.accounts import roles
from agentops.config.models import ModelRoute
from agentops.config.source import config_source
from agentops.lib import activity, broker, queue
from agentops.observability import metrics
from agentops.observability.process import update_memory_gauge
from agentops.ops import actions as ops_actions
from agentops.ops import health
from agentops.runs.models import Run
from review.queries import open_counts_by_queue

log = structlog.get_logger(__name__)


@login_required
def home(request):
    """`/` sends each user to the first section their role opens."""
    target = roles.home_url_for(request.user)
    if target:
        return redirect(target)
    user_roles = sorted(roles.user_roles(request.user))
    if not user_roles:
        return render(request, "agentops/no_role.html", status=403)
    return render(request, "agentops/home.html", {"roles": [roles.ROLE_LABELS.get(r, r) for r in user_roles]})


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
    registry.register(metrics.ScrapeCollector(SCRAPE_READERS))
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _active_sessions():
    count = activity.active_sessions()
    return None if count is None else [((), count)]


def _queue_depths():
    depths = broker.queue_depths()
    return None if depths is None else [((name,), depth) for name, depth in depths.items()]


def _escalations_pending():
    try:
        counts = open_counts_by_queue()
    except DatabaseError:  # the database away: leave the gauge out of this scrape (ScrapeCollector)
        return None
    return [((queue,), count) for queue, count in counts.items()]


# Gauges read at scrape time (Redis, PostgreSQL): the same number whichever process answers the scrape.
SCRAPE_READERS = {
    metrics.ACTIVE_SESSIONS: _active_sessions,
    metrics.QUEUE_DEPTH: _queue_depths,
    metrics.ESCALATIONS_PENDING: _escalations_pending,
}


@roles.section_required("ops")
def ops(request):
    return render(request, "agentops/ops.html", {**_ops_context(), "probe_form": ProbeForm()})


@roles.section_required("ops")
def ops_status(request):
    """The live part of the ops page, re-read on every `ops` event and on reconnect."""
    return render(request, "agentops/ops.html#status", _ops_context())


# The words the ops page shows for the machine's names (the names themselves stay in logs, metrics and the API).
CHECK_LABELS = {
    "database": gettext_lazy("Database (PostgreSQL)"),
    "redis": "Redis",
    "broker": gettext_lazy("Celery broker"),
}
BREAKER_STATES = {
    "closed": gettext_lazy("closed"),
    "open": gettext_lazy("open"),
    "half_open": gettext_lazy("half open"),
    "unreadable": gettext_lazy("unreadable"),
}
BACKENDS = {"redis": "Redis", "memory": gettext_lazy("process memory")}


def _ops_context() -> dict:
    timeouts = config_source().get().timeouts
    breakers = _breaker_snapshots()
    for snapshot in breakers:
        snapshot["state_label"] = BREAKER_STATES.get(snapshot["state"], snapshot["state"])
        snapshot["forced_label"] = BREAKER_STATES.get(snapshot.get("forced") or "", snapshot.get("forced"))
        snapshot["backend_label"] = BACKENDS.get(snapshot.get("backend", ""), snapshot.get("backend"))
    checks = health.run_checks()
    statuses = dict(Run.objects.values_list("status").annotate(n=Count("id")).order_by())
    return {
        "layered": {"llm": timeouts.llm, "tool": timeouts.tool},
        "checks": [(check, CHECK_LABELS.get(check.name, check.name)) for check in checks],
        "workers": health.ping_workers(timeout=0.5),
        "breakers": breakers,
        "queues": health.queue_depths(),
        "timeouts": health.adaptive_timeouts_in_force(),
        "runs_by_status": {Run.Status(s).label if s in Run.Status.values else s: n for s, n in statuses.items()},
        "operations": ["default", *ModelRoute.objects.values_list("operation", flat=True)],
    }


def _breaker_snapshots() -> list[dict]:
    """Every breaker known in Redis plus one per configured route target (closed until first used), so
    the page lists them before their first call and after Redis lost its keys. Names come from Redis and
    model ids may hold anything (``openrouter:meta-llama/Llama-3-8B``): a name that is not provider:model, or
    whose state cannot be read, is listed as unreadable instead of failing the page."""
    registry, config = wiring.breaker_registry(), config_source().get()
    names = set(registry.all_names())
    names.update(t.name for route in config.routes for t in route.chain)
    names.update(t.name for t in config.default_chain)
    snapshots = []
    for name in sorted(names):
        provider, _, model = name.partition(":")
        try:
            if not provider or not model:
                raise ValueError("not provider:model")
            snapshots.append(registry.get(provider, model).snapshot())
        except Exception as exc:  # one odd name must not take the ops page down with it
            log.warning("ops.breaker_unreadable", breaker=name[:300], error=repr(exc)[:200])
            snapshots.append({"name": name, "state": "unreadable", "unreadable": True})
    return snapshots


@roles.section_required("ops")
@require_POST
def ops_breaker(request, operation: str):
    """Force a breaker open/closed or reset it; answers the refreshed status fragment. The breaker's name is
    the form field ``breaker`` (a model id may contain ``/``, ``?`` or anything else a URL path would mangle)."""
    try:
        ops_actions.operate_breaker(request.POST.get("breaker", ""), operation, actor=request.user)
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc))
    response = render(request, "agentops/ops.html#status", _ops_context())
    # The page re-reads #ops-status through its live trigger, which finds the element in the DOM now
    # (a refresh that landed while this request was in flight may have replaced the one clicked).
    trigger_client_event(response, "live:ops")
    return response


@roles.section_required("ops")
@require_POST
def ops_probe(request):
    """Queue one prompt through the guard pipeline on a worker; the answer polls for the result."""
    form = ProbeForm(request.POST)
    if not form.is_valid():
        return render(request, "agentops/ops.html#probe-form", {"probe_form": form}, status=422)
    task = queue.send_now(
        "agentops.probe_route", form.cleaned_data["operation"], form.cleaned_data["prompt"], ignore_result=False
    )  # its page polls for the result
    return render(
        request,
        "agentops/ops.html#probe-result",
        {"task_id": task.id, "result": None, "probe_form": ProbeForm(initial=form.cleaned_data)},
    )


@roles.section_required("ops")
def ops_probe_result(request, task_id: str):
    outcome = AsyncResult(task_id)
    result = None
    if outcome.ready():
        result = outcome.result
        if not outcome.successful():
            result = {"ok": False, "error": _("task failed: %(error)r") % {"error": outcome.result}}
    response = render(request, "agentops/ops.html#probe-result", {"task_id": task_id, "result": result})
    if result is not None:  # the probe may have created a breaker or a latency sample: refresh the status
        trigger_client_event(response, "live:ops")
    return response


class ProbeForm(forms.Form):
    operation = forms.SlugField(max_length=50, initial="default")
    prompt = forms.CharField(
        max_length=4000,
        initial=gettext_lazy("Summarise what a circuit breaker does in one sentence."),
        widget=forms.Textarea(attrs={"rows": 3}),
    )


async def bench_bare(request):
    """Baseline for benchmarks: the cheapest JSON view Django can serve (enabled only for benches)."""
    return JsonResponse({"status": "ok"})
