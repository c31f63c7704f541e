"""What the review pages show: escalations turned into plain display values (DESIGN §6, §9), and the
decision data (the JSONL export and the approval stats).

Everything an agent supplied (operation names, arguments, context, run input and output) is untrusted: it
becomes plain text here (pretty JSON, invisible and bidi-control characters made visible) and the
templates only auto-escape it inside `hx-disable` containers, so neither the browser nor htmx acts on it.
Durations and deadlines are formatted by agentops/lib/display.py, like everywhere else.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Aggregate, Count, F, FloatField, Func, Q, QuerySet
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from agentops.lib import display
from agentops.runs.models import Step
from agentops.runs.presenters import error_view, timeline_steps
from review import queries, saved_filters
from review.forms import ALL_TEAMS, DecisionForm
from review.models import AuditEvent, Escalation, Priority, Reason, SavedFilter

RECENT_LIMIT = 10
DISPLAY_LIMIT = 20_000  # characters of one displayed value; the rest is cut with a note
SUMMARY_CHARS = 90
EXPORT_CHUNK = 500  # escalations per page of the export (memory stays flat however many there are)
# Bidi controls and zero-width characters can make agent text lie about itself (an RTL override turns
# "send_note\u202egnp.exe" into something else on screen). Shown as visible \u escapes (e.g. \u202e): inside JSON
# that is the same value, in plain text it is an honest marker.
INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
PRIORITY_LABELS = dict(Priority.choices)
REASON_LABELS = dict(Reason.choices)
# The machine's words for kinds, sources, audit events and argument changes, as the pages show them.
KIND_LABELS = {"tool": gettext_lazy("tool call"), "llm": gettext_lazy("LLM call")}
SOURCE_LABELS = {
    "run": gettext_lazy("run"),
    "api": gettext_lazy("REST API"),
    "budget": gettext_lazy("budget"),
    "gateway": gettext_lazy("gateway"),
}
EVENT_LABELS = {
    "created": gettext_lazy("created"),
    "claimed": gettext_lazy("claimed"),
    "released": gettext_lazy("released"),
    "decided": gettext_lazy("decided"),
    "escalated_to_expert": gettext_lazy("escalated to the expert queue"),
    "expired": gettext_lazy("expired"),
    "withdrawn": gettext_lazy("withdrawn"),
    "reminded": gettext_lazy("reminder sent"),
    "waiter_gave_up": gettext_lazy("closed: the waiting client gave up"),
}
CHANGE_LABELS = {"added": gettext_lazy("added"), "removed": gettext_lazy("removed"), "changed": gettext_lazy("changed")}
REFRESH_EVENT = "review:refresh"  # tells the page's live regions to re-read now (our own POST changed things)
FINISHED = (Escalation.State.DECIDED, Escalation.State.EXPIRED)
D = Escalation.Decision


# --- text ----------------------------------------------------------------------------------------
def reveal(text: str) -> str:
    """The text with invisible and direction-changing characters replaced by visible escapes."""
    return INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _cut(text: str, limit: int = DISPLAY_LIMIT) -> str:
    if len(text) <= limit:
        return text
    rest = _("%(n)s more characters not shown") % {"n": display.number(len(text) - limit)}
    return f"{text[:limit]}\n… ({rest})"


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


def optional_url(name: str, *args) -> str:
    """A page another part of the project provides, once it is installed (else "")."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


def holder(escalation: Escalation, user, now) -> tuple[str, bool]:
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
    team: str = ""
    assignee: str = ""
    assigned_to_me: bool = False
    reminded: bool = False  # the reminder before the deadline went out (review.actions.due_for_reminder)


@dataclass
class DecidedRow:
    escalation: Escalation
    agent: str
    operation: str
    by: str
    when: str


@dataclass(frozen=True)
class PageLink:
    label: str
    url: str  # "" when there is nowhere to go (the first page's "previous")
    rel: str


@dataclass(frozen=True)
class SavedFilterLink:
    pk: int
    name: str
    url: str
    delete_url: str
    current: bool


def _queue_row(esc: Escalation, user, now, queue_url: str) -> QueueRow:
    held_by, mine = holder(esc, user, now)
    sla, overdue = display.time_left(esc.deadline_at, now)
    href = f"{queue_url}{esc.pk}/"
    assignee = esc.assigned_to.get_username() if esc.assigned_to_id else ""
    return QueueRow(
        pk=esc.pk,
        href=href,
        decide_url=f"{href}decide",
        priority=esc.priority,
        priority_label=PRIORITY_LABELS.get(esc.priority, esc.priority),
        reason_label=REASON_LABELS.get(esc.reason, esc.reason),
        state=esc.state,
        version=esc.version,
        expert=esc.queue == Escalation.Queue.EXPERTS,
        approvable=esc.approvable,
        agent=reveal(esc.agent.name) if esc.agent_id else "—",
        operation=reveal(esc.operation),
        arguments=summary(getattr(esc, "arguments_head", None) or esc.arguments),
        created_iso=esc.created_at.isoformat(),
        age=display.age((now - esc.created_at).total_seconds()),
        deadline_iso=esc.deadline_at.isoformat(),
        deadline_title=esc.deadline_at.strftime("%Y-%m-%d %H:%M:%S %Z"),
        sla=sla,
        overdue=overdue,
        holder=held_by,
        mine=mine,
        team=esc.team,
        assignee=assignee,
        assigned_to_me=esc.assigned_to_id is not None and esc.assigned_to_id == user.pk,
        reminded=esc.reminded_at is not None,
    )


def _page_links(page: queries.Page, filters: dict, queue_url: str) -> list[PageLink]:
    def url(number: int) -> str:
        return f"{queue_url}?{queries.query_string(filters, page=number)}"

    first, last = page.number == 1, page.number == page.pages
    return [
        PageLink(_("First"), "" if first else url(1), "first"),
        PageLink(_("Previous"), "" if first else url(page.number - 1), "prev"),
        PageLink(_("Next"), "" if last else url(page.number + 1), "next"),
        PageLink(_("Last"), "" if last else url(page.pages), "last"),
    ]


def saved_filter_links(user, *current: str) -> list[SavedFilterLink]:
    """The reviewer's named queue views, as links (and where to delete each); the ones whose query is one of
    `current` (the view's query string as the page writes it, and as the address bar has it) are marked."""
    queue_url = reverse("review:queue")
    current = {saved_filters.clean_query(query) for query in current}
    return [
        SavedFilterLink(
            saved.pk,
            saved.name,
            f"{queue_url}?{saved.query}" if saved.query else queue_url,
            reverse("review:delete_filter", args=[saved.pk]),
            saved.query in current,
        )
        for saved in SavedFilter.objects.filter(user=user).only("pk", "name", "query")
    ]


def queue_context(user, filters: dict, *, address_query: str = "") -> dict:
    """The queue page's values for `user` under the cleaned `filters` (the form is the view's): one page of
    the open escalations in the chosen order (most urgent first, then oldest, by default), how many there
    are, and the latest decided ones."""
    now = timezone.now()
    queue_url = reverse("review:queue")
    page = queries.page_of(queries.open_items(user, filters), filters.get("page") or 1)
    rows = [_queue_row(esc, user, now, queue_url) for esc in page.items]
    decided = queries.filtered(
        Escalation.objects.visible_to(user)
        .filter(state__in=(Escalation.State.DECIDED, Escalation.State.EXPIRED))
        .select_related("agent", "decided_by"),
        filters,
        user,
    ).order_by("-decided_at", "-pk")[:RECENT_LIMIT]
    recent = [
        DecidedRow(
            escalation=esc,
            agent=reveal(esc.agent.name) if esc.agent_id else "—",
            operation=reveal(esc.operation),
            by=esc.decided_by.get_username() if esc.decided_by_id else _("deadline"),
            when=display.age((now - esc.decided_at).total_seconds()) if esc.decided_at else "",
        )
        for esc in decided
    ]
    watching_experts = filters["queue"] == Escalation.Queue.EXPERTS
    query = queries.query_string(filters)
    return {
        "rows": rows,
        "total": page.total,
        "shown": len(rows),
        "page": page,
        "page_links": _page_links(page, filters, queue_url),
        # localised ("10,000" in English and Chinese alike; the active language's separators)
        "total_label": number_format(page.total, force_grouping=True),
        "first_label": number_format(page.first, force_grouping=True),
        "last_label": number_format(page.last, force_grouping=True),
        "page_label": number_format(page.number, force_grouping=True),
        "pages_label": number_format(page.pages, force_grouping=True),
        "query": query,
        "saved_filters": saved_filter_links(user, query, address_query),
        "recent": recent,
        "queue": filters["queue"],
        "filtered": any(filters.get(key) for key in ("reason", "agent", "priority", "q", "assignee"))
        or filters.get("team", ALL_TEAMS) != ALL_TEAMS,
        "server_now": now.isoformat(),
        "live_group": "review.experts" if watching_experts else "review.queue",
        "refresh_event": REFRESH_EVENT,
        "export_url": optional_url("review:export"),
        "stats_url": optional_url("review:stats"),
    }


# --- the approval screen -------------------------------------------------------------------------
@dataclass
class DiffRow:
    key: str
    change: str  # added | removed | changed
    before: str
    after: str

    @property
    def change_label(self) -> str:
        return str(CHANGE_LABELS.get(self.change, self.change))


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

    @property
    def label(self) -> str:
        return str(EVENT_LABELS.get(self.event.event, self.event.event))


def _suggestions(value: Any) -> list[str]:
    if value in (None, "", [], {}):
        return []
    items = value if isinstance(value, list) else [value]
    return [pretty(item) for item in items[:50]]


def _timeline(run, user) -> dict:
    """The run's steps through the runs pages' own partial (what `user` may not see of an expert-queue
    step is withheld there too)."""
    try:
        steps = timeline_steps(run, user)
    except Exception:  # the runs page is being reworked: the link still leads to the full timeline
        return {}
    return {
        "has_timeline": True,
        "steps": steps,
        "longest_step_ms": max((v.duration_ms or 0.0 for v in steps), default=0.0) or 1.0,
    }


def decision_form(escalation: Escalation) -> DecisionForm:
    """The unbound decision form for `escalation`: its version and its proposed arguments to edit."""
    return DecisionForm(initial={"version": escalation.version, "arguments": as_json(escalation.arguments)})


def detail_context(escalation: Escalation, user, form: DecisionForm, *, notice: str = "") -> dict:
    """The approval screen's values: everything the reviewer needs to decide `escalation`."""
    now = timezone.now()
    held_by, mine = holder(escalation, user, now)
    context = escalation.context if isinstance(escalation.context, dict) else {"context": escalation.context}
    known = ("user_input", "agent_analysis", "analysis", "suggestions", "suggested_actions", "confidence", "messages")
    other = {k: v for k, v in context.items() if k not in known}
    arguments = escalation.arguments
    diff = []
    edited = getattr(form, "cleaned_data", {}).get("parsed_arguments") if form.is_bound else None
    if edited is not None:
        diff = arguments_diff(arguments, edited)
    elif escalation.decision == Escalation.Decision.MODIFIED:
        diff = arguments_diff(arguments, escalation.final_arguments)
    sla, overdue = display.time_left(escalation.deadline_at, now)
    run = escalation.run
    agent_confidence = escalation.confidence if escalation.confidence is not None else context.get("confidence")
    events = [
        AuditRow(event, event.actor.get_username() if event.actor_id else _("system"), pretty(event.data))
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
        "request_messages": _request_messages(context.get("messages")),
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
        "holder": held_by,
        "mine": mine,
        "sla": sla,
        "overdue": overdue,
        "age": display.age((now - escalation.created_at).total_seconds()),
        "server_now": now.isoformat(),
        "run": run,
        "run_url": optional_url("runs:detail", run.pk) if run else "",
        "run_input": pretty(run.input) if run else "",
        "run_output": pretty(run.output) if run else "",
        **(_timeline(run, user) if run else {}),
        "events": events,
        "can_escalate": escalation.queue == Escalation.Queue.REVIEWERS,
        "can_approve": escalation.approvable,
        "can_modify": escalation.modifiable,
        "llm_hint": _llm_hint(escalation),
        "reason_label": Reason(escalation.reason).label if escalation.reason in Reason.values else escalation.reason,
        "kind_label": KIND_LABELS.get(escalation.kind, escalation.kind),
        "source_label": SOURCE_LABELS.get(escalation.source, escalation.source),
        "failure": failure_view(context),
        "refresh_event": REFRESH_EVENT,
    }


def failure_view(context: dict):
    """The failure an escalation was raised for (all fallbacks failed, retries exhausted), on the error
    taxonomy, when the escalation recorded one (``context["error"]``, written by review.escalator)."""
    error = context.get("error")
    if not isinstance(error, dict) or not error.get("class"):
        return None
    return error_view(str(error["class"]), str(error.get("reason") or ""))


@dataclass(frozen=True)
class MessageRow:
    role: str
    content: str


def _request_messages(messages: Any) -> list[MessageRow]:
    """The messages of an LLM call handed to a human (a run's step, a held gateway call), role and text."""
    if not isinstance(messages, list):
        return []
    rows = []
    for message in messages:
        if isinstance(message, dict):
            content = message.get("content")
            rows.append(MessageRow(summary(message.get("role"), 20) or "?", pretty(content) if content else ""))
    return rows


def _llm_hint(escalation: Escalation) -> str:
    """What the reviewer's choices mean for an LLM call (no arguments to modify); empty for a tool call."""
    if escalation.modifiable:
        return ""
    if escalation.source == "gateway":
        if escalation.approvable:
            return _(
                "A budget blocks this gateway call and its client is waiting: approve lets the call go ahead "
                "once, past the block; take over sends your text as the answer; reject answers the client "
                "with the quota error."
            )
        return _(
            "Every upstream failed for this gateway call and its client is waiting: write the answer yourself "
            "(take over) or reject it (the client gets the provider's error)."
        )
    return _("Every fallback failed for this LLM call: write the answer yourself (take over) or reject.")


# --- decision data: which escalations -----------------------------------------------------------
def _day_start(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def finished_escalations(data: dict, user) -> QuerySet[Escalation]:
    """Decided or expired escalations `user` may see (expert-queue items only for experts) matching the
    cleaned filters (review.forms.DecisionFilterForm); the date range applies to when the decision was
    made (or the safe default applied), whole days in the site's time zone, inclusive."""
    query = Escalation.objects.visible_to(user).filter(state__in=FINISHED, decided_at__isnull=False)
    if data.get("agent"):
        query = query.filter(agent=data["agent"])
    if data.get("since"):
        query = query.filter(decided_at__gte=_day_start(data["since"]))
    if data.get("until"):
        query = query.filter(decided_at__lt=_day_start(data["until"] + timedelta(days=1)))
    return query


# --- decision data: the JSONL export ------------------------------------------------------------
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


def export_pages(query: QuerySet[Escalation]) -> Iterator[bytes]:
    """The export of `query` as JSONL, read in primary-key pages of EXPORT_CHUNK escalations."""
    after: int | None = 0
    while after is not None:
        body, after = _export_page(query, after)
        if body:
            yield body


async def aexport_pages(query: QuerySet[Escalation]) -> AsyncIterator[bytes]:
    """``export_pages`` for an ASGI response: each page is read off the event loop."""
    page = sync_to_async(_export_page)
    after: int | None = 0
    while after is not None:
        body, after = await page(query, after)
        if body:
            yield body


def export_filename(agent, now: datetime) -> str:
    stamp = now.strftime("%Y%m%d-%H%M%S")
    return f"decisions-{agent.name}-{stamp}.jsonl" if agent else f"decisions-{stamp}.jsonl"


# --- decision data: the stats page ------------------------------------------------------------
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
        return cls(value, _("%(percent)s %%") % {"percent": f"{value * 100:.0f}"}, f"{value:.4f}")


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
            median_label=display.duration(g["median"]),
            volume_meter=f"{g['count'] / busiest:.4f}" if busiest else "0",
        )
        for g in groups
    ]


def stats_totals(rows: list[StatsRow]) -> dict:
    """The stats page's totals over `rows`, and the overall approval rate."""
    totals = {
        "count": sum(r.count for r in rows),
        "decided": sum(r.decided for r in rows),
        "expired": sum(r.expired for r in rows),
    }
    approved = sum(r.approved for r in rows)
    return {"totals": totals, "overall_approval": Rate.of(approved, totals["decided"])}


def export_url(query_string: str) -> str:
    """The export of the same filters ("" while the export is not mounted)."""
    url = optional_url("review:export")
    if not url:
        return ""
    return f"{url}?{query_string}" if query_string else url
