"""Runs pages: the runs list and one run's detail with its step timeline, cancel and retry. What they show
is built in presenters.py; state changes go through agentops.runs.actions.lifecycle."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from agentops.accounts import roles
from agentops.lib import display
from agentops.runs import ports
from agentops.runs.actions import lifecycle
from agentops.runs.forms import RunFilterForm
from agentops.runs.models import Run, Step
from agentops.runs.presenters import (
    CANCELLABLE,
    RUN_BADGES,
    error_view,
    failure_reason,
    pretty_json,
    preview,
    run_duration,
    run_rows,
    timeline_steps,
)

PAGE_SIZE = 50


def _list_context(request) -> dict:
    form = RunFilterForm(request.GET or None)
    runs = form.filtered(Run.objects.select_related("agent")).order_by("-created_at", "-pk")
    page = Paginator(runs, PAGE_SIZE).get_page(request.GET.get("page"))
    page_runs = list(page.object_list)
    counts = dict(
        Step.objects.filter(run__in=[run.pk for run in page_runs])
        .values("run")
        .annotate(n=Count("pk"))
        .values_list("run", "n")
    )
    rows = run_rows(page_runs, counts, timezone.now())
    query = request.GET.copy()
    query.pop("page", None)
    return {
        "form": form,
        "page": page,
        "rows": rows,
        "filter_query": query.urlencode(),
        "filtered": bool(query.get("agent") or query.get("status")),
    }


@roles.section_required("runs")
@require_GET
def run_list(request):
    """`/runs/`: newest first, filtered by agent and status, 50 a page. htmx requests (filters, paging,
    live refreshes) get the table fragment only."""
    context = _list_context(request)
    if request.htmx and not request.htmx.boosted:
        return render(request, "agentops/runs/list.html#table", context)
    return render(request, "agentops/runs/list.html", context)


# --- one run ---------------------------------------------------------------------------------------
def _run_or_404(run_id: int) -> Run:
    return get_object_or_404(Run.objects.select_related("agent"), pk=run_id)


def _detail_context(run: Run, user) -> dict:
    steps = timeline_steps(run, user)
    longest = max((view.duration_ms for view in steps), default=0.0)
    duration, ongoing = run_duration(run)
    return {
        "run": run,
        "badge": RUN_BADGES.get(run.status, ""),
        "duration": duration,
        "ongoing": ongoing,
        "active": display.duration(run.active_seconds) if run.active_seconds else display.DASH,
        "can_cancel": run.status in CANCELLABLE and not run.cancel_requested,
        "can_retry": run.status == Run.Status.FAILED,
        "input_json": pretty_json(run.input),
        "input_preview": preview(run.input),
        "output_json": pretty_json(run.output),
        "output_preview": preview(run.output),
        "steps": steps,
        "failure_reason": failure_reason(run, steps),
        "calls": ports.current().run_calls(run.pk),
        "longest_step_ms": longest or 1.0,
        "run_error": error_view(run.error_class),
        "live_group": f"run.{run.pk}",
    }


@roles.section_required("runs")
@require_GET
def run_detail(request, run_id: int):
    return render(request, "agentops/runs/detail.html", _detail_context(_run_or_404(run_id), request.user))


@roles.section_required("runs")
@require_GET
def run_live(request, run_id: int):
    """Header and timeline of one run, re-read on every `run.<id>` event and on reconnect."""
    return render(request, "agentops/runs/detail.html#live", _detail_context(_run_or_404(run_id), request.user))


@roles.section_required("runs")
@require_GET
def run_notices(request, run_id: int):
    """The outcome of the last cancel/retry (Django messages), fetched after a refused htmx action:
    htmx does not swap 4xx answers, so the refusal is stored and this region re-reads it."""
    run = _run_or_404(run_id)
    return render(request, "agentops/runs/detail.html#notices", {"run": run, "show_messages": True})


def _action_answer(request, run: Run, *, ok: bool, message: str) -> HttpResponse:
    """Answer a cancel/retry. htmx: the notices fragment (200, or 409 with the refusal). Without htmx:
    back to the run, or the run page itself with the refusal and 409."""
    if request.htmx:  # the notices fragment; htmx swaps 409 bodies too (responseHandling in base.html)
        (messages.success if ok else messages.error)(request, message)
        response = render(
            request, "agentops/runs/detail.html#notices", {"run": run, "show_messages": True}, status=200 if ok else 409
        )
        response["HX-Trigger"] = f"live:run.{run.pk}"  # re-read header and timeline without waiting for the socket
        return response
    if ok:
        messages.success(request, message)
        return redirect("runs:detail", run_id=run.pk)
    messages.error(request, message)
    return render(request, "agentops/runs/detail.html", _detail_context(_run_or_404(run.pk), request.user), status=409)


@roles.section_required("runs")
@require_POST
def run_cancel(request, run_id: int):
    """Cancel a queued, running or waiting run; refused (409) once it has finished."""
    run = _run_or_404(run_id)
    if run.is_terminal:
        return _action_answer(
            request,
            run,
            ok=False,
            message=_("Run %(pk)s has already ended (%(status)s); there is nothing to cancel.")
            % {"pk": run.pk, "status": run.get_status_display()},
        )
    run = lifecycle.cancel_run(run.pk)
    if run.status == Run.Status.CANCELLED:
        message = _("Run %(pk)s was cancelled.") % {"pk": run.pk}
    elif run.cancel_requested:
        message = _("Cancellation of run %(pk)s requested: its worker stops before the next step.") % {"pk": run.pk}
    else:  # it finished between our read and the action's lock
        return _action_answer(
            request,
            run,
            ok=False,
            message=_("Run %(pk)s has already ended (%(status)s); there is nothing to cancel.")
            % {"pk": run.pk, "status": run.get_status_display()},
        )
    return _action_answer(request, run, ok=True, message=message)


@roles.section_required("runs")
@require_POST
def run_retry(request, run_id: int):
    """Retry a failed run from its last checkpoint (completed steps replay); refused (409) otherwise."""
    run = _run_or_404(run_id)
    try:
        run = lifecycle.retry_run(run.pk)
    except ValueError as exc:
        return _action_answer(request, run, ok=False, message=_("Retry refused: %(why)s.") % {"why": exc})
    return _action_answer(
        request,
        run,
        ok=True,
        message=_("Run %(pk)s queued again: completed steps replay from the journal.") % {"pk": run.pk},
    )
