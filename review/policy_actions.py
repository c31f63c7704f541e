"""Suggestions applied, undone and dismissed: the only code that changes policy rows from a suggestion.

Each change is re-checked at the moment it is made (the page a person clicked may be minutes old, and another
admin may have acted meanwhile), saved through agentops.config.actions (so every process reloads the policy
within about a second) and audited as a PolicyChange with the row's fields before and after and the evidence.
"""

from __future__ import annotations

import structlog
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from agentops.config import actions as config_actions
from agentops.runs.models import Agent
from review import suggestions
from review.models import AutoDecision, EscalationPolicy, PolicyChange, SuggestionDismissal
from review.policy import policy_for

log = structlog.get_logger(__name__)

# The fields a new row copies from the row that applied before it, so that above the value limit (and for
# everything an auto decision does not answer) the rules stay exactly what they were.
RULE_FIELDS = (
    "low_confidence_below",
    "high_value_above",
    "max_retries",
    "sensitive_prefixes",
    "deadline_seconds",
    "priority_sensitive_operation",
    "priority_high_value_decision",
    "priority_low_confidence",
    "priority_max_retries_exceeded",
    "priority_all_fallbacks_failed",
    "priority_budget_exceeded",
)


class SuggestionChanged(Exception):
    """The suggestion no longer stands as shown (new decisions, a policy row covers it, it was dismissed);
    the message says so in the reader's language."""


class UndoRefused(Exception):
    """The change cannot be undone (already undone, or the row was edited since); the message says why."""


def snapshot(row: EscalationPolicy | None) -> dict | None:
    """Every stored field of ``row`` (None: no row), as JSON — what PolicyChange keeps before and after."""
    if row is None:
        return None
    return {field.attname: getattr(row, field.attname) for field in EscalationPolicy._meta.concrete_fields}


def _lock_scope(agent_id: int) -> Agent:
    """Serialise changes of one agent's rows: two admins applying at once must not both create the row."""
    agent = Agent.objects.select_for_update().filter(pk=agent_id).first()
    if agent is None:
        raise SuggestionChanged(_("This suggestion no longer stands: its agent no longer exists."))
    return agent


def _standing(agent_id: int, operation: str, kind: str, below: float | None, decisions: int) -> suggestions.Found:
    found = suggestions.find_one(agent_id, operation)
    if found is None or found.kind != kind:
        raise SuggestionChanged(_("This suggestion no longer stands: the decisions or the policy changed meanwhile."))
    if found.evidence.decisions != decisions or found.below != below:
        raise SuggestionChanged(
            _("New decisions arrived since the page was shown; check the updated evidence and apply again.")
        )
    return found


@transaction.atomic
def apply_suggestion(
    agent_id: int, operation: str, kind: str, user, *, below: float | None, decisions: int
) -> PolicyChange:
    """Make the policy row for this agent + operation decide as suggested (created, or updated and enabled),
    provided the suggestion still stands exactly as the person saw it (``below``, ``decisions``)."""
    agent = _lock_scope(agent_id)
    found = _standing(agent_id, operation, kind, below, decisions)
    row = EscalationPolicy.objects.select_for_update().filter(agent_id=agent_id, operation=operation).first()
    before = snapshot(row)
    if row is None:
        applying = policy_for(agent.name, operation, rows=suggestions.policy_rows())
        row = EscalationPolicy(agent=agent, operation=operation, **{f: getattr(applying, f) for f in RULE_FIELDS})
    row.enabled = True
    row.auto_decision = AutoDecision(kind).value
    row.auto_approve_below = found.below if kind == AutoDecision.APPROVE else None
    config_actions.save_runtime_object(row, actor=user)
    change = PolicyChange.objects.create(
        kind=PolicyChange.Kind.APPLIED,
        suggestion=kind,
        policy=row,
        agent=agent,
        agent_name=agent.name,
        operation=operation,
        before=before,
        after=snapshot(row),
        evidence=found.as_json(),
        actor=user,
    )
    log.info(
        "policy.suggestion_applied", change=change.pk, policy=row.pk, agent=agent.name, operation=operation, kind=kind
    )
    return change


@transaction.atomic
def undo(change_id: int, user) -> PolicyChange:
    """Put the row back exactly as it was before an applied suggestion (deleted, if the suggestion created
    it) — only while the row is still exactly as that change left it, so no later edit is lost."""
    change = PolicyChange.objects.select_for_update().get(pk=change_id, kind=PolicyChange.Kind.APPLIED)
    if PolicyChange.objects.filter(undoes=change).exists():
        raise UndoRefused(_("This change was undone already."))
    if change.agent_id is None or not Agent.objects.select_for_update().filter(pk=change.agent_id).exists():
        raise UndoRefused(_("The agent of this change no longer exists."))
    row = (
        EscalationPolicy.objects.select_for_update()
        .filter(agent_id=change.agent_id, operation=change.operation)
        .first()
    )
    current = snapshot(row)
    if current != change.after:
        raise UndoRefused(
            _("The policy row was edited after this change; undoing it would lose that edit. Edit the row instead.")
        )
    if change.before is None:
        config_actions.delete_runtime_object(row, actor=user)
    else:
        for name, value in change.before.items():
            setattr(row, name, value)
        config_actions.save_runtime_object(row, actor=user)
    undone = PolicyChange.objects.create(
        kind=PolicyChange.Kind.UNDONE,
        suggestion=change.suggestion,
        policy=row if change.before is not None else None,
        agent_id=change.agent_id,
        agent_name=change.agent_name,
        operation=change.operation,
        before=current,
        after=change.before,
        evidence=change.evidence,
        actor=user,
        undoes=change,
    )
    log.info("policy.suggestion_undone", change=change.pk, undone=undone.pk, agent=change.agent_name)
    return undone


@transaction.atomic
def dismiss(agent_id: int, operation: str, kind: str, user, *, below: float | None, decisions: int) -> None:
    """Hide this suggestion until REVIEW_SUGGEST_RECENT more decisions of its agent + operation arrive."""
    _lock_scope(agent_id)
    found = _standing(agent_id, operation, kind, below, decisions)
    SuggestionDismissal.objects.update_or_create(
        agent_id=agent_id,
        operation=operation,
        suggestion=kind,
        defaults={"decisions_seen": found.evidence.decisions, "dismissed_by": user, "dismissed_at": timezone.now()},
    )
    log.info("policy.suggestion_dismissed", agent=agent_id, operation=operation, kind=kind)
