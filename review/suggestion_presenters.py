"""What the suggestions page shows: each suggestion in words with its evidence, and the applied changes.

Agent and operation names are agent-supplied data: they go into the page as plain text (auto-escaped by the
template) and are never translated; only the words around them are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from agentops.lib import display
from review import suggestions
from review.models import Escalation, PolicyChange, Suggestion


def _number(value: float | None) -> str:
    return display.DASH if value is None else f"{value:g}"


def _percent(part: int, whole: int) -> str:
    """One decimal, rounded down, so 97.96 % never shows as the 98.0 % it does not reach."""
    if not whole:
        return display.DASH
    tenths = part * 1000 // whole
    return f"{tenths // 10}.{tenths % 10} %"


def decision_label(decision: str) -> str:
    return {
        Escalation.Decision.APPROVED: _("approved"),
        Escalation.Decision.MODIFIED: _("modified"),
        Escalation.Decision.TAKEN_OVER: _("taken over"),
        Escalation.Decision.REJECTED: _("rejected"),
    }.get(decision, decision)


def suggestion_title(kind: str, operation: str, agent: str, below: float | None) -> str:
    """ "Auto-approve send_note for t-approval below 490" — the suggestion in one sentence."""
    names = {"operation": operation, "agent": agent, "limit": _number(below)}
    if kind == Suggestion.REJECT:
        return _("Auto-reject %(operation)s for %(agent)s") % names
    if below is None:
        return _("Auto-approve %(operation)s for %(agent)s, whatever the value") % names
    return _("Auto-approve %(operation)s for %(agent)s below value %(limit)s") % names


@dataclass
class LastDecision:
    pk: int
    href: str
    decision: str
    decision_label: str
    value: str
    by: str
    when: datetime


@dataclass
class SuggestionView:
    title: str
    kind: str
    agent: str
    operation: str
    form: dict  # the hidden fields of apply / dismiss
    counts: str
    rate: str
    recent: str
    values: str
    first_at: datetime
    last_at: datetime
    span: str
    last: list[LastDecision] = field(default_factory=list)


def _counts(e: suggestions.Evidence) -> str:
    return ngettext(
        "%(n)s decision: %(approved)s approved unchanged, %(modified)s modified, %(taken_over)s taken over, "
        "%(rejected)s rejected",
        "%(n)s decisions: %(approved)s approved unchanged, %(modified)s modified, %(taken_over)s taken over, "
        "%(rejected)s rejected",
        e.decisions,
    ) % {
        "n": e.decisions,
        "approved": e.approved,
        "modified": e.modified,
        "taken_over": e.taken_over,
        "rejected": e.rejected,
    }


def _values(e: suggestions.Evidence) -> str:
    if not e.valued:
        return _("no decision carried a value")
    return _("%(valued)s of %(n)s with a value: %(min)s – %(max)s (largest approved: %(max_approved)s)") % {
        "valued": e.valued,
        "n": e.decisions,
        "min": _number(e.min_value),
        "max": _number(e.max_value),
        "max_approved": _number(e.max_approved_value),
    }


def _recent(e: suggestions.Evidence) -> str:
    if e.recent_changes == 0:
        return _("the latest %(m)s: all approved unchanged") % {"m": e.recent}
    return _("the latest %(m)s: %(changes)s not approved unchanged") % {"m": e.recent, "changes": e.recent_changes}


def _last(rows: list[Escalation]) -> list[LastDecision]:
    return [
        LastDecision(
            pk=row.pk,
            href=reverse("review:detail", args=[row.pk]),
            decision=row.decision,
            decision_label=decision_label(row.decision),
            value=_number(row.value),
            by=row.decided_by.get_username() if row.decided_by_id else display.DASH,
            when=row.decided_at,
        )
        for row in rows
    ]


def suggestion_views(found: list[suggestions.Found]) -> list[SuggestionView]:
    last = suggestions.last_decisions(found)
    views = []
    for item in found:
        e = item.evidence
        views.append(
            SuggestionView(
                title=suggestion_title(item.kind, e.operation, e.agent, item.below),
                kind=item.kind,
                agent=e.agent,
                operation=e.operation,
                form={
                    "agent": e.agent_id,
                    "operation": e.operation,
                    "kind": item.kind,
                    "below": "" if item.below is None else repr(item.below),
                    "decisions": e.decisions,
                },
                counts=_counts(e),
                rate=_percent(e.approved, e.decisions),
                recent=_recent(e),
                values=_values(e),
                first_at=e.first_at,
                last_at=e.last_at,
                span=display.duration((e.last_at - e.first_at).total_seconds()),
                last=_last(last.get((e.agent_id, e.operation), [])),
            )
        )
    return views


@dataclass
class ChangeView:
    pk: int
    title: str
    kind: str
    actor: str
    at: datetime
    created: bool  # the change created the row (undo deletes it)
    undone: bool
    undone_by: str
    undone_at: datetime | None
    admin_url: str
    undo_url: str
    evidence: str
    before: list[tuple[str, str, str]]  # (field, before, after) of the fields that changed


def _admin_url(policy_id: int | None) -> str:
    if policy_id is None:
        return ""
    try:
        return reverse("admin:review_escalationpolicy_change", args=[policy_id])
    except NoReverseMatch:
        return ""


def changed_fields(before: dict | None, after: dict | None) -> list[tuple[str, str, str]]:
    """The row's fields that differ, as text (a missing row shows as a dash)."""
    names = list((after or before or {}).keys())
    rows = []
    for name in names:
        old = display.DASH if before is None else str(before.get(name))
        new = display.DASH if after is None else str(after.get(name))
        if old != new:
            rows.append((name, old, new))
    return rows


def change_view(change: PolicyChange, undone: PolicyChange | None) -> ChangeView:
    evidence = change.evidence or {}
    return ChangeView(
        pk=change.pk,
        title=suggestion_title(change.suggestion, change.operation, change.agent_name, evidence.get("below")),
        kind=change.suggestion,
        actor=change.actor.get_username() if change.actor_id else display.DASH,
        at=change.created_at,
        created=change.before is None,
        undone=undone is not None,
        undone_by=(undone.actor.get_username() if undone and undone.actor_id else display.DASH),
        undone_at=undone.created_at if undone else None,
        admin_url=_admin_url(change.policy_id) if undone is None else "",
        undo_url=reverse("review:suggestion_undo", args=[change.pk]),
        evidence=_percent(evidence.get("approved", 0), evidence.get("decisions", 0))
        + " · "
        + ngettext("%(n)s decision", "%(n)s decisions", evidence.get("decisions", 0))
        % {"n": evidence.get("decisions", 0)},
        before=changed_fields(change.before, change.after),
    )


def applied_changes(limit: int = 50) -> list[ChangeView]:
    """The latest applied suggestions, each with whether (and by whom) it was undone."""
    applied = list(PolicyChange.objects.filter(kind=PolicyChange.Kind.APPLIED).select_related("actor")[:limit])
    undone = {c.undoes_id: c for c in PolicyChange.objects.filter(undoes__in=applied).select_related("actor")}
    return [change_view(change, undone.get(change.pk)) for change in applied]
