"""Runs pages: the runs list and one run's detail with its step timeline, cancel and retry.

Everything an agent or an LLM produced (input, output, arguments, results, errors) is untrusted: the
templates only ever auto-escape it and render it inside `hx-disable` containers, so neither the browser
nor htmx acts on it. The views turn rows into plain display values so the templates hold no logic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from agentops.accounts import roles
from agentops.runs import actions
from agentops.runs.models import Agent, Run, Step
from budgets.models import UsageRecord
from budgets.presenters import call_rows

PAGE_SIZE = 50
JSON_DISPLAY_LIMIT = 20_000  # characters of pretty JSON shown per value; the rest is cut with a note
PREVIEW_CHARS = 90

RUN_BADGES = {
    Run.Status.QUEUED: "",
    Run.Status.RUNNING: "info",
    Run.Status.WAITING_HUMAN: "warn",
    Run.Status.SUCCEEDED: "ok",
    Run.Status.FAILED: "bad",
    Run.Status.CANCELLED: "muted",
}
STEP_BADGES = {
    Step.Status.RUNNING: "info",
    Step.Status.COMPLETED: "ok",
    Step.Status.FAILED: "bad",
    Step.Status.SKIPPED: "muted",
    Step.Status.WAITING_HUMAN: "warn",
    Step.Status.DECIDED: "ok",
}
HOP_BADGES = {"ok": "ok", "answered": "ok", "failed": "bad", "rejected": "bad", "no_rule": "muted", "pending": "warn"}
CANCELLABLE = (Run.Status.QUEUED, Run.Status.RUNNING, Run.Status.WAITING_HUMAN)


# --- display helpers -----------------------------------------------------------------------------
def pretty_json(value: Any) -> str:
    """Indented JSON for a <pre>, cut at JSON_DISPLAY_LIMIT characters (the template escapes it)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > JSON_DISPLAY_LIMIT:
        return f"{text[:JSON_DISPLAY_LIMIT]}\n… ({len(text) - JSON_DISPLAY_LIMIT:,} more characters not shown)"
    return text


def preview(value: Any) -> str:
    """One line summarising a value, for the <summary> of its collapsed <details>."""
    if value is None or value in ({}, [], ""):
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def seconds_label(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def run_duration(run: Run, now=None) -> tuple[str, bool]:
    """Wall-clock time from start to finish (to now while unfinished), and whether it is still going."""
    if run.started_at is None:
        return "—", False
    ongoing = run.finished_at is None
    end = run.finished_at or now or timezone.now()
    return seconds_label(max((end - run.started_at).total_seconds(), 0.0)), ongoing and not run.is_terminal


def review_url(escalation_id) -> str:
    """The approval screen for an escalation, once the review app is installed."""
    if escalation_id is None:
        return ""
    try:
        return reverse("review:detail", args=[escalation_id])
    except NoReverseMatch:
        return ""


@dataclass
class RunRow:
    run: Run
    badge: str
    steps: int
    duration: str
    ongoing: bool


@dataclass
class HopView:
    handler: str
    outcome: str
    badge: str
    target: str
    error_class: str
    reason: str
    attempts: Any
    waits: str
    duration: str
    status: Any


@dataclass
class EscalationView:
    reason: str
    priority: str
    subject: str  # the tool or operation the human decides on
    kind: str  # "tool" | "llm" | ""
    value: Any
    confidence: Any
    rule: str
    side_effect: Any
    details_json: str  # proposed tool arguments, or the messages of an llm call nobody could answer
    review_url: str
    # from the review queue's escalation row, when there is one
    state: str = ""
    queue: str = ""
    claimed_by: str = ""
    deadline_at: Any = None
    decision: str = ""
    decision_badge: str = ""
    decided_by: str = ""
    comment: str = ""
    reviewer_confidence: Any = None
    outcome_json: str = ""  # the reviewer's final arguments or written result
    withheld: bool = False  # an expert-queue item shown to a non-expert: what it is, none of its content


@dataclass
class StepView:
    step: Step
    badge: str
    hops: list[HopView]
    escalation: EscalationView | None
    duration: str
    duration_ms: float
    arguments_json: str
    arguments_preview: str
    result_json: str
    result_preview: str
    decision_json: str
    # a key that changes whenever what the step shows may change: unchanged steps keep their
    # <details> open/closed across live refreshes (hx-preserve)
    state_key: str


def hop_view(hop: Any) -> HopView:
    data = hop if isinstance(hop, dict) else {"handler": str(hop)}
    waits = data.get("waits") or []
    if not isinstance(waits, list | tuple):
        waits = [waits]
    duration_ms = data.get("duration_ms")
    return HopView(
        handler=str(data.get("handler") or "?"),
        outcome=str(data.get("outcome") or ""),
        badge=HOP_BADGES.get(data.get("outcome"), "warn"),
        target=str(data.get("target") or ""),
        error_class=str(data.get("error_class") or ""),
        reason=str(data.get("reason") or ""),
        attempts=data.get("attempts", ""),
        waits=", ".join(seconds_label(w) if isinstance(w, int | float) else str(w) for w in waits),
        duration=seconds_label(duration_ms / 1000) if isinstance(duration_ms, int | float) else "",
        status=data.get("status") or "",
    )


def escalation_view(step: Step, escalation=None) -> EscalationView | None:
    """What the human must decide for a waiting step (or decided, for a decided one): from the review
    queue's Escalation row when there is one, else from the request recorded on the step itself."""
    inline = (step.arguments if isinstance(step.arguments, dict) else {}).get("escalation")
    inline = inline if isinstance(inline, dict) else {}
    if escalation is None and not inline:
        return None
    url = review_url(step.escalation_id) if step.status == Step.Status.WAITING_HUMAN else ""
    if escalation is not None:
        messages_ = (escalation.context or {}).get("messages") if escalation.kind == "llm" else None
        return EscalationView(
            reason=escalation.reason,
            priority=escalation.priority,
            subject=escalation.operation,
            kind=escalation.kind,
            value=escalation.value,
            confidence=escalation.confidence,
            rule=escalation.rule,
            side_effect=inline.get("side_effect"),
            details_json=pretty_json(messages_ if escalation.kind == "llm" else escalation.arguments or None),
            review_url=url,
            state=escalation.state,
            queue=escalation.queue,
            claimed_by=escalation.claimed_by.get_username() if escalation.claimed_by_id else "",
            deadline_at=escalation.deadline_at if escalation.is_open else None,
            decision=escalation.get_decision_display() if escalation.decision else "",
            decision_badge="bad" if escalation.decision == "rejected" else "ok",
            decided_by=escalation.decided_by.get_username() if escalation.decided_by_id else "",
            comment=escalation.comment,
            reviewer_confidence=escalation.reviewer_confidence,
            outcome_json=pretty_json(
                escalation.result if escalation.result is not None else escalation.final_arguments
            ),
        )
    if inline.get("tool"):
        kind, subject, details = "tool", str(inline["tool"]), inline.get("arguments")
    elif inline.get("operation"):
        kind, subject, details = "llm", str(inline["operation"]), inline.get("messages")
    else:
        kind, subject, details = step.kind if step.kind in ("tool", "llm") else "", step.name, None
    return EscalationView(
        reason=str(inline.get("reason") or ""),
        priority=str(inline.get("priority") or ""),
        subject=subject,
        kind=kind,
        value=inline.get("value"),
        confidence=inline.get("confidence"),
        rule=str(inline.get("rule") or ""),
        side_effect=inline.get("side_effect"),
        details_json=pretty_json(details),
        review_url=url,
    )


def escalations_for(steps) -> dict:
    """The review queue's escalation rows of these steps, by id (one query)."""
    ids = [step.escalation_id for step in steps if step.escalation_id is not None]
    if not ids:
        return {}
    from review.models import Escalation

    rows = Escalation.objects.select_related("claimed_by", "decided_by").in_bulk(ids)
    # before the review queue existed a step's escalation id was its own pk: only trust a row that
    # points back at this very step
    by_step = {(step.run_id, step.seq): step.escalation_id for step in steps}
    return {pk: row for pk, row in rows.items() if by_step.get((row.run_id, row.step_seq)) == pk}


def withheld_escalation_view(escalation) -> EscalationView:
    """An expert-queue escalation as a non-expert sees it on a timeline: what kind of decision it is and
    where it stands, never its arguments, context, messages, decision, comment or outcome."""
    return EscalationView(
        reason=escalation.reason,
        priority=escalation.priority,
        subject=escalation.operation,
        kind=escalation.kind,
        value=None,
        confidence=None,
        rule="",
        side_effect=None,
        details_json="",
        review_url="",
        state=escalation.state,
        queue=escalation.queue,
        withheld=True,
    )


def step_view(step: Step, escalations: dict | None = None, *, withheld: bool = False) -> StepView:
    """One step of a timeline. `withheld`: its escalation is in the expert queue and the viewer is no expert,
    so the step's arguments, result and decision (the same content) are left out as well."""
    if withheld:
        return StepView(
            step=step,
            badge=STEP_BADGES.get(step.status, ""),
            hops=[hop_view(hop) for hop in (step.hops if isinstance(step.hops, list) else [])],
            escalation=withheld_escalation_view(escalations[step.escalation_id]),
            duration=seconds_label(step.duration_ms / 1000) if step.duration_ms else "—",
            duration_ms=step.duration_ms,
            arguments_json="",
            arguments_preview="",
            result_json="",
            result_preview="",
            decision_json="",
            state_key=f"{step.executions}-{step.status}-{step.attempts}-withheld",
        )
    arguments = step.arguments
    escalation = None
    if step.status in (Step.Status.WAITING_HUMAN, Step.Status.DECIDED):
        escalation = escalation_view(step, (escalations or {}).get(step.escalation_id))
    if isinstance(arguments, dict) and "escalation" in arguments:
        # the escalation block shows what the human decides on; a held tool call's own arguments are
        # the same values, so they are not repeated below it
        arguments = {k: v for k, v in arguments.items() if k != "escalation"}
        if escalation is not None and escalation.kind == "tool":
            arguments = None
    return StepView(
        step=step,
        badge=STEP_BADGES.get(step.status, ""),
        hops=[hop_view(hop) for hop in (step.hops if isinstance(step.hops, list) else [])],
        escalation=escalation,
        duration=seconds_label(step.duration_ms / 1000) if step.duration_ms else "—",
        duration_ms=step.duration_ms,
        arguments_json=pretty_json(arguments or None),
        arguments_preview=preview(arguments),
        result_json=pretty_json(step.result),
        result_preview=preview(step.result),
        decision_json=pretty_json(step.decision),
        state_key=f"{step.executions}-{step.status}-{step.attempts}",
    )


# --- the list --------------------------------------------------------------------------------------
class RunFilterForm(forms.Form):
    agent = forms.ChoiceField(required=False)
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Run.Status.choices])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = Agent.objects.order_by("name").values_list("name", flat=True)
        self.fields["agent"].choices = [("", "Any agent"), *((name, name) for name in names)]

    def filtered(self, queryset):
        """Apply every filter that validated; a bad value is reported on its field, not applied."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        if data.get("agent"):
            queryset = queryset.filter(agent__name=data["agent"])
        if data.get("status"):
            queryset = queryset.filter(status=data["status"])
        return queryset


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
    now = timezone.now()
    rows = []
    for run in page_runs:
        duration, ongoing = run_duration(run, now)
        rows.append(RunRow(run, RUN_BADGES.get(run.status, ""), counts.get(run.pk, 0), duration, ongoing))
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


def timeline_steps(run: Run, user) -> list[StepView]:
    """The run's steps as `user` may see them: a step whose escalation is in the expert queue keeps only
    what kind of decision it is for a non-expert (review.models EscalationQuerySet.visible_to decides)."""
    rows = list(run.steps.order_by("seq"))
    escalations = escalations_for(rows)
    withheld: set[int] = set()
    if escalations:
        from review.models import Escalation

        visible = Escalation.objects.visible_to(user).filter(pk__in=list(escalations)).values_list("pk", flat=True)
        withheld = set(escalations) - set(visible)
    return [step_view(step, escalations, withheld=step.escalation_id in withheld) for step in rows]


def _detail_context(run: Run, user) -> dict:
    steps = timeline_steps(run, user)
    longest = max((view.duration_ms for view in steps), default=0.0)
    duration, ongoing = run_duration(run)
    return {
        "run": run,
        "badge": RUN_BADGES.get(run.status, ""),
        "duration": duration,
        "ongoing": ongoing,
        "active": seconds_label(run.active_seconds) if run.active_seconds else "—",
        "can_cancel": run.status in CANCELLABLE and not run.cancel_requested,
        "can_retry": run.status == Run.Status.FAILED,
        "input_json": pretty_json(run.input),
        "input_preview": preview(run.input),
        "output_json": pretty_json(run.output),
        "output_preview": preview(run.output),
        "steps": steps,
        "calls": call_rows(UsageRecord.objects.filter(run_id=run.pk).select_related("price").order_by("id")[:500]),
        "longest_step_ms": longest or 1.0,
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
            request, run, ok=False, message=f"Run {run.pk} has already {run.status}; there is nothing to cancel."
        )
    run = actions.cancel_run(run.pk)
    if run.status == Run.Status.CANCELLED:
        message = f"Run {run.pk} was cancelled."
    elif run.cancel_requested:
        message = f"Cancellation of run {run.pk} requested: its worker stops before the next step."
    else:  # it finished between our read and the action's lock
        return _action_answer(
            request, run, ok=False, message=f"Run {run.pk} has already {run.status}; there is nothing to cancel."
        )
    return _action_answer(request, run, ok=True, message=message)


@roles.section_required("runs")
@require_POST
def run_retry(request, run_id: int):
    """Retry a failed run from its last checkpoint (completed steps replay); refused (409) otherwise."""
    run = _run_or_404(run_id)
    try:
        run = actions.retry_run(run.pk)
    except ValueError as exc:
        return _action_answer(request, run, ok=False, message=f"Retry refused: {exc}.")
    return _action_answer(
        request, run, ok=True, message=f"Run {run.pk} queued again: completed steps replay from the journal."
    )
