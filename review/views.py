"""Review pages: the live escalation queue and the approval screen (DESIGN §6, §9).

Every decision goes through review.actions (claim, release, decide, escalate_to_expert); these views only
validate and render. Everything an agent supplied (operation names, arguments, context, run input and
output) is untrusted: the views turn it into plain text (pretty JSON, invisible and bidi-control
characters made visible) and the templates only auto-escape it inside `hx-disable` containers, so neither
the browser nor htmx acts on it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from agentops.accounts import roles
from review import actions
from review.actions import DecisionConflict
from review.forms import (
    ACTION_LABELS,
    ACTIONS,
    ALL_QUEUES,
    APPROVE,
    ESCALATE,
    MODIFY,
    TAKE_OVER,
    DecisionForm,
    QueueFilterForm,
)
from review.models import AuditEvent, Escalation, Priority, Reason

QUEUE_LIMIT = 100  # rows on the queue page; the count says how many more wait
RECENT_LIMIT = 10
DISPLAY_LIMIT = 20_000  # characters of one displayed value; the rest is cut with a note
SUMMARY_CHARS = 90
# Bidi controls and zero-width characters can make agent text lie about itself (an RTL override turns
# "send_note\u202egnp.exe" into something else on screen). Shown as visible \u escapes (e.g. \u202e): inside JSON
# that is the same value, in plain text it is an honest marker.
INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
PRIORITY_LABELS = dict(Priority.choices)
REASON_LABELS = dict(Reason.choices)
REFRESH_EVENT = "review:refresh"  # tells the page's live regions to re-read now (our own POST changed things)


# --- display helpers -----------------------------------------------------------------------------
def reveal(text: str) -> str:
    """The text with invisible and direction-changing characters replaced by visible escapes."""
    return INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _cut(text: str, limit: int = DISPLAY_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… ({len(text) - limit:,} more characters not shown)"


def as_json(value: Any) -> str:
    """Indented JSON, complete (for the modify textarea: it must round-trip)."""
    return reveal(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def pretty(value: Any) -> str:
    """A value for a <pre>: strings as themselves, everything else as indented JSON; cut when huge."""
    if value is None or value in ({}, [], ""):
        return ""
    if isinstance(value, str):
        return _cut(reveal(value))
    return _cut(as_json(value))


def summary(value: Any, chars: int = SUMMARY_CHARS) -> str:
    """One line summarising a value (a queue row's arguments)."""
    if value is None or value in ({}, [], ""):
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = reveal(" ".join(text[: chars * 4].split()))
    return text if len(text) <= chars else text[: chars - 1] + "…"


def duration_label(seconds: float) -> str:
    """ "42 s", "3 min", "2 h 5 min" (the same as static/js/review.js shows as it counts)."""
    seconds = int(abs(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def sla_label(deadline: datetime, now: datetime) -> tuple[str, bool]:
    """Time left to the deadline as m:ss (h:mm:ss past an hour), and whether it has passed."""
    left = (deadline - now).total_seconds()
    whole = int(abs(left))
    hours, rest = divmod(whole, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
    return (f"overdue {clock}" if left < 0 else clock), left < 0


def _optional_url(name: str, *args) -> str:
    """A page another part of the project provides, once it is installed."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


is_expert = roles.is_expert


def _check_queue_access(user, escalation: Escalation) -> None:
    if not Escalation.objects.visible_to(user).filter(pk=escalation.pk).exists():
        raise PermissionDenied("This escalation is in the expert queue.")


def _holder(escalation: Escalation, user, now) -> tuple[str, bool]:
    """Who works on the item right now (a lapsed lease holds nothing), and whether that is `user`."""
    if escalation.state != Escalation.State.CLAIMED or escalation.claimed_by_id is None:
        return "", False
    if escalation.claim_expires_at and escalation.claim_expires_at < now:
        return "", False
    return escalation.claimed_by.get_username(), escalation.claimed_by_id == user.pk


# --- the queue ---------------------------------------------------------------------------------
@dataclass
class QueueRow:
    """One queue row as plain display values: the live queue re-renders every row on every change, so
    the template only prints (no lookups, filters or URL reversing per row)."""

    pk: int
    href: str
    decide_url: str
    priority: str
    priority_label: str
    reason_label: str
    state: str
    version: int
    expert: bool
    approvable: bool
    agent: str
    operation: str
    arguments: str
    created_iso: str
    age: str
    deadline_iso: str
    deadline_title: str
    sla: str
    overdue: bool
    holder: str
    mine: bool


@dataclass
class DecidedRow:
    escalation: Escalation
    agent: str
    operation: str
    by: str
    when: str


def _default_queue(user) -> str:
    if user.is_superuser:
        return ALL_QUEUES
    user_roles = roles.user_roles(user)
    if roles.EXPERT in user_roles:
        return ALL_QUEUES if roles.REVIEWER in user_roles else Escalation.Queue.EXPERTS
    return Escalation.Queue.REVIEWERS


def _filtered(queryset, filters: dict):
    if filters["queue"] != ALL_QUEUES:
        queryset = queryset.filter(queue=filters["queue"])
    if filters.get("reason"):
        queryset = queryset.filter(reason=filters["reason"])
    if filters.get("agent"):
        queryset = queryset.filter(agent__name=filters["agent"])
    if filters.get("priority"):
        queryset = queryset.filter(priority=filters["priority"])
    return queryset


def _queue_context(request) -> dict:
    user = request.user
    expert = is_expert(user)
    if request.GET.get("queue") in (Escalation.Queue.EXPERTS, ALL_QUEUES) and not expert:
        raise PermissionDenied("Only experts open the expert queue.")
    form = QueueFilterForm(request.GET or None, expert=expert)
    filters = form.cleaned(_default_queue(user))
    if not form.is_bound:
        form = QueueFilterForm(initial={"queue": filters["queue"]}, expert=expert)
    now = timezone.now()
    open_items = _filtered(
        Escalation.objects.visible_to(user)
        .filter(state__in=Escalation.OPEN_STATES)
        .select_related("agent", "claimed_by")
        .defer("context", "result", "final_arguments", "comment"),
        filters,
    ).order_by("priority_rank", "created_at", "pk")
    total = open_items.count()
    queue_url = reverse("review:queue")
    rows = []
    for esc in open_items[:QUEUE_LIMIT]:
        holder, mine = _holder(esc, user, now)
        sla, overdue = sla_label(esc.deadline_at, now)
        href = f"{queue_url}{esc.pk}/"
        rows.append(
            QueueRow(
                pk=esc.pk,
                href=href,
                decide_url=f"{href}decide",
                priority=esc.priority,
                priority_label=PRIORITY_LABELS.get(esc.priority, esc.priority),
                reason_label=REASON_LABELS.get(esc.reason, esc.reason),
                state=esc.state,
                version=esc.version,
                expert=esc.queue == Escalation.Queue.EXPERTS,
                approvable=esc.kind != "llm",
                agent=reveal(esc.agent.name) if esc.agent_id else "—",
                operation=reveal(esc.operation),
                arguments=summary(esc.arguments),
                created_iso=esc.created_at.isoformat(),
                age=duration_label((now - esc.created_at).total_seconds()),
                deadline_iso=esc.deadline_at.isoformat(),
                deadline_title=esc.deadline_at.strftime("%Y-%m-%d %H:%M:%S %Z"),
                sla=sla,
                overdue=overdue,
                holder=holder,
                mine=mine,
            )
        )
    decided = _filtered(
        Escalation.objects.visible_to(user)
        .filter(state__in=(Escalation.State.DECIDED, Escalation.State.EXPIRED))
        .select_related("agent", "decided_by"),
        filters,
    ).order_by("-decided_at", "-pk")[:RECENT_LIMIT]
    recent = [
        DecidedRow(
            escalation=esc,
            agent=reveal(esc.agent.name) if esc.agent_id else "—",
            operation=reveal(esc.operation),
            by=esc.decided_by.get_username() if esc.decided_by_id else "deadline",
            when=duration_label((now - esc.decided_at).total_seconds()) if esc.decided_at else "",
        )
        for esc in decided
    ]
    watching_experts = filters["queue"] == Escalation.Queue.EXPERTS
    return {
        "form": form,
        "rows": rows,
        "total": total,
        "shown": len(rows),
        "recent": recent,
        "queue": filters["queue"],
        "filtered": any(filters.get(key) for key in ("reason", "agent", "priority")),
        "server_now": now.isoformat(),
        "live_group": "review.experts" if watching_experts else "review.queue",
        "refresh_event": REFRESH_EVENT,
        "export_url": _optional_url("review:export"),
        "stats_url": _optional_url("review:stats"),
    }


@roles.section_required("queue")
@require_GET
def queue(request):
    """`/review/`: open escalations, most urgent first, then oldest. htmx requests (filters, live
    refreshes, reconnects) get the rows fragment only."""
    context = _queue_context(request)
    if request.htmx and not request.htmx.boosted:
        return render(request, "review/queue.html#live", context)
    return render(request, "review/queue.html", context)


# --- the approval screen -------------------------------------------------------------------------
@dataclass
class DiffRow:
    key: str
    change: str  # added | removed | changed
    before: str
    after: str


def arguments_diff(proposed: Any, edited: Any) -> list[DiffRow]:
    """Top-level keys that differ between the proposed and the edited arguments."""
    if not isinstance(proposed, dict) or not isinstance(edited, dict):
        return []
    rows = []
    for key in sorted(set(proposed) | set(edited), key=str):
        if key not in edited:
            rows.append(DiffRow(reveal(str(key)), "removed", summary(proposed[key], 200), ""))
        elif key not in proposed:
            rows.append(DiffRow(reveal(str(key)), "added", "", summary(edited[key], 200)))
        elif proposed[key] != edited[key]:
            rows.append(DiffRow(reveal(str(key)), "changed", summary(proposed[key], 200), summary(edited[key], 200)))
    return rows


@dataclass
class AuditRow:
    event: AuditEvent
    actor: str
    data: str


def _suggestions(value: Any) -> list[str]:
    if value in (None, "", [], {}):
        return []
    items = value if isinstance(value, list) else [value]
    return [pretty(item) for item in items[:50]]


def _timeline(run, user) -> dict:
    """The run's steps through the runs pages' own partial, when that page is installed (what `user` may
    not see of an expert-queue step is withheld there too)."""
    try:
        from agentops.runs.views import timeline_steps
    except ImportError:
        return {}
    try:
        steps = timeline_steps(run, user)
    except Exception:  # the runs page is being reworked: the link still leads to the full timeline
        return {}
    return {
        "has_timeline": True,
        "steps": steps,
        "longest_step_ms": max((v.duration_ms or 0.0 for v in steps), default=0.0) or 1.0,
    }


def _detail_context(request, escalation: Escalation, *, form: DecisionForm | None = None, notice: str = "") -> dict:
    user = request.user
    now = timezone.now()
    holder, mine = _holder(escalation, user, now)
    context = escalation.context if isinstance(escalation.context, dict) else {"context": escalation.context}
    known = ("user_input", "agent_analysis", "analysis", "suggestions", "suggested_actions", "confidence")
    other = {k: v for k, v in context.items() if k not in known}
    arguments = escalation.arguments
    if form is None:
        form = DecisionForm(initial={"version": escalation.version, "arguments": as_json(arguments)})
    diff = []
    edited = getattr(form, "cleaned_data", {}).get("parsed_arguments") if form.is_bound else None
    if edited is not None:
        diff = arguments_diff(arguments, edited)
    elif escalation.decision == Escalation.Decision.MODIFIED:
        diff = arguments_diff(arguments, escalation.final_arguments)
    sla, overdue = sla_label(escalation.deadline_at, now)
    run = escalation.run
    agent_confidence = escalation.confidence if escalation.confidence is not None else context.get("confidence")
    events = [
        AuditRow(event, event.actor.get_username() if event.actor_id else "system", pretty(event.data))
        for event in escalation.events.select_related("actor")
    ]
    return {
        "esc": escalation,
        "agent_name": reveal(escalation.agent.name) if escalation.agent_id else "—",
        "operation": reveal(escalation.operation),
        "rule": reveal(escalation.rule),
        "session": reveal(escalation.session_id),
        "user_input": pretty(context.get("user_input")),
        "analysis": pretty(context.get("agent_analysis", context.get("analysis"))),
        "suggestions": _suggestions(context.get("suggestions", context.get("suggested_actions"))),
        "other_context": pretty(other),
        "agent_confidence": pretty(agent_confidence) if not isinstance(agent_confidence, int | float) else None,
        "confidence_value": agent_confidence if isinstance(agent_confidence, int | float) else None,
        "confidence_percent": round(agent_confidence * 100)
        if isinstance(agent_confidence, int | float) and 0 <= agent_confidence <= 1
        else None,
        "arguments_json": pretty(arguments) or "{}",
        "proposed_json": as_json(arguments),
        "final_arguments_json": pretty(escalation.final_arguments),
        "result_json": pretty(escalation.result),
        "diff": diff,
        "form": form,
        "notice": notice,
        "holder": holder,
        "mine": mine,
        "sla": sla,
        "overdue": overdue,
        "age": duration_label((now - escalation.created_at).total_seconds()),
        "server_now": now.isoformat(),
        "run": run,
        "run_url": _optional_url("runs:detail", run.pk) if run else "",
        "run_input": pretty(run.input) if run else "",
        "run_output": pretty(run.output) if run else "",
        **(_timeline(run, user) if run else {}),
        "events": events,
        "can_escalate": escalation.queue == Escalation.Queue.REVIEWERS,
        "can_approve": escalation.kind != "llm",
        "reason_label": Reason(escalation.reason).label if escalation.reason in Reason.values else escalation.reason,
        "refresh_event": REFRESH_EVENT,
    }


def _escalation_or_404(pk: int) -> Escalation:
    return get_object_or_404(
        Escalation.objects.select_related("agent", "run", "run__agent", "claimed_by", "decided_by"), pk=pk
    )


@roles.section_required("queue")
@require_GET
def detail(request, pk: int):
    """`/review/<id>/`: everything the reviewer needs to decide, and the five actions. Opening it claims
    the item (a renewable lease) unless somebody else holds it."""
    escalation = _escalation_or_404(pk)
    _check_queue_access(request.user, escalation)
    notice = ""
    if escalation.is_open:
        try:
            actions.claim(escalation.pk, request.user)
        except DecisionConflict as exc:
            notice = str(exc)
        escalation = _escalation_or_404(pk)
    return render(request, "review/detail.html", _detail_context(request, escalation, notice=notice))


@roles.section_required("queue")
@require_GET
def detail_live(request, pk: int):
    """The status and the audit log of one escalation, re-read when the queue changes and on reconnect.
    The decision form is never re-rendered here: it keeps what the reviewer typed."""
    escalation = _escalation_or_404(pk)
    _check_queue_access(request.user, escalation)
    return render(request, "review/detail.html#live", _detail_context(request, escalation))


@roles.section_required("queue")
@require_POST
def claim(request, pk: int):
    """Claim the item, or renew one's own lease (the page does that every four minutes). Answers the
    status and, out of band, the form's new `version`."""
    escalation = _escalation_or_404(pk)
    _check_queue_access(request.user, escalation)
    status = 200
    notice = ""
    try:
        actions.claim(pk, request.user)
    except DecisionConflict as exc:
        notice, status = str(exc), 409
    escalation = _escalation_or_404(pk)
    if not request.htmx:
        if notice:
            messages.error(request, notice)
        return redirect("review:detail", pk=pk)
    context = {**_detail_context(request, escalation), "claim_notice": notice, "claimed_now": status == 200}
    return render(request, "review/detail.html#claimed", context, status=status)


@roles.section_required("queue")
@require_POST
def release(request, pk: int):
    """Give the item back to the queue and go back there. The page also sends this as a beacon when the
    reviewer leaves it (`beacon=1` with the version the page holds): then only a lease that nothing
    renewed since is released, so a reload of the page, which claims again, keeps the item."""
    escalation = _escalation_or_404(pk)
    _check_queue_access(request.user, escalation)
    if request.POST.get("beacon"):
        if request.POST.get("version") == str(escalation.version):
            actions.release(pk, request.user)
        return HttpResponse(status=204)
    escalation = actions.release(pk, request.user)
    if escalation.state == Escalation.State.PENDING:
        messages.info(request, f"Released escalation {pk}: it is back in the queue.")
    return _to_queue(request)


def _to_queue(request) -> HttpResponse:
    if request.htmx:
        return HttpResponseClientRedirect(reverse("review:queue"))
    return redirect("review:queue")


def _apply(request, escalation: Escalation, form: DecisionForm) -> Escalation:
    """Carry out a valid decision through review.actions (raises DecisionConflict)."""
    data = form.cleaned_data
    action = data["action"]
    if action == ESCALATE:
        # escalate_to_expert takes no version: refuse here what the reviewer did not see
        if escalation.version != data["version"] and escalation.is_open:
            raise DecisionConflict(
                "Already escalated to the expert queue."
                if escalation.queue == Escalation.Queue.EXPERTS
                else "This item changed meanwhile; reload it to see its current state."
            )
        return actions.escalate_to_expert(escalation.pk, request.user, comment=data["comment"])
    return actions.decide(
        escalation.pk,
        request.user,
        ACTIONS[action],
        arguments=data.get("parsed_arguments") if action == MODIFY else None,
        result=data.get("parsed_result") if action == TAKE_OVER else None,
        comment=data["comment"],
        confidence=data["confidence"],
        version=data["version"],
    )


@roles.section_required("queue")
@require_POST
def decide(request, pk: int):
    """Approve, modify, take over, escalate or reject — accepted exactly once. A refused decision
    (someone else decided or holds the item, or it changed) answers 409 with the reason and the form as
    the reviewer filled it; an invalid one 422. From the queue (`source=queue`) the answer is a notice."""
    escalation = _escalation_or_404(pk)
    _check_queue_access(request.user, escalation)
    from_queue = request.POST.get("source") == "queue"
    form = DecisionForm(request.POST)
    if form.is_valid() and escalation.kind == "llm":
        # every fallback failed: there is no proposed action to approve, only an answer to write
        if form.cleaned_data["action"] in (APPROVE, MODIFY):
            form.add_error(None, "There is no proposed action to approve: take over (write the answer) or reject.")
        elif form.cleaned_data["action"] == TAKE_OVER:
            form.cleaned_data["parsed_result"] = form.cleaned_data["result"].strip()  # the answer is text
    if not form.is_valid():
        return _refused(request, escalation, form, status=422, from_queue=from_queue)
    try:
        _apply(request, escalation, form)
    except DecisionConflict as exc:
        return _refused(request, _escalation_or_404(pk), form, status=409, from_queue=from_queue, notice=str(exc))
    action = form.cleaned_data["action"]
    message = f"{ACTION_LABELS[action]}: escalation {pk}"
    if action != ESCALATE and escalation.run_id:
        message += f"; run {escalation.run_id} resumes."
    else:
        message += "."
    if from_queue:
        response = render(request, "review/queue.html#notice", {"notice": message, "notice_ok": True})
        return trigger_client_event(response, REFRESH_EVENT)
    messages.success(request, message)
    return _to_queue(request)


def _refused(request, escalation, form, *, status: int, from_queue: bool, notice: str = "") -> HttpResponse:
    if from_queue:
        if not notice:
            notice = "; ".join(str(e) for errors in form.errors.values() for e in errors)
        response = render(request, "review/queue.html#notice", {"notice": notice, "notice_ok": False}, status=status)
        return trigger_client_event(response, REFRESH_EVENT)
    context = _detail_context(request, escalation, form=form, notice=notice)
    if request.htmx:
        response = render(request, "review/detail.html#decision", context, status=status)
        return trigger_client_event(response, REFRESH_EVENT) if status == 409 else response
    return render(request, "review/detail.html", context, status=status)
