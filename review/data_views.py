"""Decision data: every decided or expired escalation as JSONL (for evaluation and fine-tuning), and
per agent + operation approval rates (the seed of later policy suggestions).

Both read only. The export streams: rows are read in primary-key pages of EXPORT_CHUNK, so memory stays
flat however many decisions there are; under ASGI the response body is an async iterator (uvicorn sends
each page as it is read), under WSGI a plain one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django import forms
from django.core.handlers.asgi import ASGIRequest
from django.db.models import Aggregate, Count, F, FloatField, Func, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from agentops.accounts import roles
from agentops.runs.models import Agent, Step
from review.models import Escalation

EXPORT_CHUNK = 500
FINISHED = (Escalation.State.DECIDED, Escalation.State.EXPIRED)
D = Escalation.Decision


# --- filters (shared by the export and the stats page) ---------------------------------------------
class DecisionFilterForm(forms.Form):
    agent = forms.ModelChoiceField(
        queryset=Agent.objects.all(), to_field_name="name", required=False, empty_label="Every agent"
    )
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise forms.ValidationError("“From” is after “To”.")
        return data


def _day_start(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def finished_escalations(data: dict, user) -> QuerySet[Escalation]:
    """Decided or expired escalations `user` may see (expert-queue items only for experts) matching the
    cleaned filters; the date range applies to when the decision was made (or the safe default applied),
    whole days in the site's time zone, inclusive."""
    query = Escalation.objects.visible_to(user).filter(state__in=FINISHED, decided_at__isnull=False)
    if data.get("agent"):
        query = query.filter(agent=data["agent"])
    if data.get("since"):
        query = query.filter(decided_at__gte=_day_start(data["since"]))
    if data.get("until"):
        query = query.filter(decided_at__lt=_day_start(data["until"] + timedelta(days=1)))
    return query


# --- export ------------------------------------------------------------------------------------------
def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _final(escalation: Escalation, tool_result: Any) -> dict:
    """What actually happened instead of the proposal: the operation that ran (none when rejected or a
    human wrote the result), with which arguments, and the step's result."""
    decision = escalation.decision
    if decision in (D.APPROVED, D.MODIFIED):
        arguments = escalation.final_arguments if decision == D.MODIFIED else escalation.arguments
        return {"operation": escalation.operation, "arguments": arguments, "result": tool_result}
    if decision == D.TAKEN_OVER:
        return {"operation": None, "arguments": None, "result": escalation.result}
    return {"operation": None, "arguments": None, "result": None}


def decision_record(escalation: Escalation, tool_result: Any = None) -> dict:
    """One JSONL line: the context, the proposal, the decision and what finally happened."""
    final = _final(escalation, tool_result)
    waited = (escalation.decided_at - escalation.created_at).total_seconds() if escalation.decided_at else None
    return {
        "escalation": escalation.pk,
        "agent": escalation.agent.name if escalation.agent_id else None,
        "run": escalation.run_id,
        "step": escalation.step_seq,
        "session_id": escalation.session_id,
        "source": escalation.source,
        "kind": escalation.kind,
        "operation": escalation.operation,
        "context": escalation.context,
        "proposed": {
            "operation": escalation.operation,
            "arguments": escalation.arguments,
            "value": escalation.value,
            "confidence": escalation.confidence,
            "retry_count": escalation.retry_count,
        },
        "final": final,
        "arguments_changed": escalation.decision == D.MODIFIED and final["arguments"] != escalation.arguments,
        "decision": escalation.decision or None,
        "state": escalation.state,
        "expired": escalation.state == Escalation.State.EXPIRED,
        "queue": escalation.queue,
        "escalated_to_expert": escalation.escalated_at is not None,
        "reviewer": escalation.decided_by.get_username() if escalation.decided_by_id else None,
        "comment": escalation.comment,
        "reviewer_confidence": escalation.reviewer_confidence,
        "reason": escalation.reason,
        "rule": escalation.rule,
        "priority": escalation.priority,
        "created_at": _iso(escalation.created_at),
        "escalated_at": _iso(escalation.escalated_at),
        "decided_at": _iso(escalation.decided_at),
        "deadline_at": _iso(escalation.deadline_at),
        "decision_seconds": round(waited, 3) if waited is not None else None,
    }


def _export_page(query: QuerySet[Escalation], after: int) -> tuple[bytes, int | None]:
    """One page of JSONL lines after primary key `after`, and the last key (None when nothing is left)."""
    rows = list(query.filter(pk__gt=after).select_related("agent", "decided_by").order_by("pk")[:EXPORT_CHUNK])
    if not rows:
        return b"", None
    executed = [r for r in rows if r.run_id and r.step_seq is not None and r.decision in (D.APPROVED, D.MODIFIED)]
    results = {}
    if executed:
        steps = Step.objects.filter(
            run_id__in={r.run_id for r in executed}, seq__in={r.step_seq for r in executed}
        ).values_list("run_id", "seq", "status", "result")
        results = {(run, seq): result for run, seq, status, result in steps if status == Step.Status.COMPLETED}
    body = "".join(
        json.dumps(decision_record(r, results.get((r.run_id, r.step_seq))), ensure_ascii=False, default=str) + "\n"
        for r in rows
    )
    return body.encode(), rows[-1].pk


def _lines(query: QuerySet[Escalation]) -> Iterator[bytes]:
    after: int | None = 0
    while after is not None:
        body, after = _export_page(query, after)
        if body:
            yield body


async def _alines(query: QuerySet[Escalation]) -> AsyncIterator[bytes]:
    page = sync_to_async(_export_page)
    after: int | None = 0
    while after is not None:
        body, after = await page(query, after)
        if body:
            yield body


@require_GET
@roles.section_required("queue")
def export_decisions(request: HttpRequest) -> HttpResponse:
    """Decided and expired escalations as JSONL, one object per line; ?agent=&since=&until= filter."""
    form = DecisionFilterForm(request.GET)
    if not form.is_valid():
        errors = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in form.errors.items())
        return HttpResponseBadRequest(f"invalid filter: {errors}", content_type="text/plain; charset=utf-8")
    query = finished_escalations(form.cleaned_data, request.user)
    content = _alines(query) if isinstance(request, ASGIRequest) else _lines(query)
    response = StreamingHttpResponse(content, content_type="application/x-ndjson; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    agent = form.cleaned_data.get("agent")
    name = f"decisions-{agent.name}-{stamp}.jsonl" if agent else f"decisions-{stamp}.jsonl"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response


# --- stats -------------------------------------------------------------------------------------------
class Median(Aggregate):
    """PostgreSQL's exact median of a numeric expression."""

    function = "PERCENTILE_CONT"
    name = "Median"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def _seconds(expression) -> Func:
    return Func(expression, template="EXTRACT(EPOCH FROM (%(expressions)s))", output_field=FloatField())


@dataclass
class Rate:
    value: float  # 0..1
    label: str  # "73 %" or "—"
    meter: str  # the <meter value>, a plain decimal whatever the locale

    @classmethod
    def of(cls, part: int, whole: int) -> Rate:
        if not whole:
            return cls(0.0, "—", "0")
        value = part / whole
        return cls(value, f"{value * 100:.0f} %", f"{value:.4f}")


@dataclass
class StatsRow:
    agent: str
    operation: str
    count: int  # decided by a human + expired
    decided: int
    expired: int
    approved: int  # approved + modified
    approval: Rate  # (approved + modified) / decided
    modification: Rate  # modified / decided
    rejection: Rate  # rejected / decided
    take_over: Rate  # taken_over / decided
    median_seconds: float | None
    median_label: str
    volume_meter: str  # count relative to the busiest row, for a bar


def _duration_label(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def decision_stats_rows(data: dict, user) -> list[StatsRow]:
    """Per agent + operation, over the escalations `user` may see: counts, rates over human decisions,
    median time to a human decision."""
    human = Q(state=Escalation.State.DECIDED)
    grouped = (
        finished_escalations(data, user)
        .values("agent__name", "operation")
        .annotate(
            count=Count("pk"),
            decided=Count("pk", filter=human),
            expired=Count("pk", filter=Q(state=Escalation.State.EXPIRED)),
            approved=Count("pk", filter=human & Q(decision__in=[D.APPROVED, D.MODIFIED])),
            modified=Count("pk", filter=human & Q(decision=D.MODIFIED)),
            rejected=Count("pk", filter=human & Q(decision=D.REJECTED)),
            taken_over=Count("pk", filter=human & Q(decision=D.TAKEN_OVER)),
            median=Median(_seconds(F("decided_at") - F("created_at")), filter=human),
        )
        .order_by("agent__name", "operation")
    )
    groups = list(grouped)
    busiest = max((g["count"] for g in groups), default=0)
    return [
        StatsRow(
            agent=g["agent__name"] or "",
            operation=g["operation"],
            count=g["count"],
            decided=g["decided"],
            expired=g["expired"],
            approved=g["approved"],
            approval=Rate.of(g["approved"], g["decided"]),
            modification=Rate.of(g["modified"], g["decided"]),
            rejection=Rate.of(g["rejected"], g["decided"]),
            take_over=Rate.of(g["taken_over"], g["decided"]),
            median_seconds=g["median"],
            median_label=_duration_label(g["median"]),
            volume_meter=f"{g['count'] / busiest:.4f}" if busiest else "0",
        )
        for g in groups
    ]


def _export_url(query_string: str) -> str:
    try:
        url = reverse("review:export")
    except NoReverseMatch:  # not wired into review/urls.py (yet)
        return ""
    return f"{url}?{query_string}" if query_string else url


@require_GET
@roles.section_required("queue")
def decision_stats(request: HttpRequest) -> HttpResponse:
    """Approval, modification and rejection rates and median decision time per agent + operation."""
    form = DecisionFilterForm(request.GET or None)
    valid = form.is_valid() if form.is_bound else True
    data = form.cleaned_data if form.is_bound and valid else {}
    rows = decision_stats_rows(data, request.user) if valid else []
    query = request.GET.urlencode() if valid else ""
    totals = {
        "count": sum(r.count for r in rows),
        "decided": sum(r.decided for r in rows),
        "expired": sum(r.expired for r in rows),
    }
    approved = sum(r.approved for r in rows)
    context = {
        "form": form,
        "rows": rows,
        "valid": valid,
        "filtered": bool(form.is_bound and any(data.values())),
        "totals": totals,
        "overall_approval": Rate.of(approved, totals["decided"]),
        "export_url": _export_url(query),
    }
    return render(request, "review/stats.html", context, status=200 if valid else 400)
