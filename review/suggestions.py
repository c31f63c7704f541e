"""Policy suggestions from decision history: where reviewers keep deciding the same way, say so.

Per agent + operation, over the escalations a person decided (state ``decided``; expiries are nobody's
decision) that the policy's rules raised (tool calls escalated for a sensitive operation, a high value, a low
confidence or retries — the escalations an auto decision would have answered instead):

- **auto-approve** when there are at least REVIEW_SUGGEST_MIN_DECISIONS (N, 20) decisions, at least
  REVIEW_SUGGEST_APPROVAL_PERCENT (98) % of them approved unchanged (approved — not modified, taken over or
  rejected), and the latest REVIEW_SUGGEST_RECENT (M, 10) all plain approvals: a modification (or any other
  outcome) among them means reviewers still change something, which an auto-approval would wave through.
  The value limit V is the largest approved value rounded up to two significant digits, strictly above it
  (480 → 490, 1234 → 1300), so every approved value of the evidence is below it; no limit when no
  decision had a value.
- **auto-reject** when there are at least N decisions and every one rejected.

A suggestion that the applying policy row already covers that way (auto-approve with no limit or one at least
V; auto-reject) is left out, and so is one dismissed until M more decisions were made since (new evidence).
Everything is counted by PostgreSQL in one grouped query (a window function numbers each group's latest
decisions); the last decisions shown as evidence are a second, small query.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection

from agentops.runs.models import Agent
from review.models import (
    AutoDecision,
    Escalation,
    EscalationPolicy,
    Reason,
    Suggestion,
    SuggestionDismissal,
)
from review.policy import policy_for

RULE_REASONS = (
    Reason.SENSITIVE_OPERATION,
    Reason.HIGH_VALUE_DECISION,
    Reason.LOW_CONFIDENCE,
    Reason.MAX_RETRIES_EXCEEDED,
)
LAST_SHOWN = 5  # decisions listed (and linked) as a suggestion's evidence


@dataclass(frozen=True)
class Thresholds:
    min_decisions: int
    approval_percent: int
    recent: int

    @classmethod
    def from_settings(cls) -> Thresholds:
        return cls(
            settings.REVIEW_SUGGEST_MIN_DECISIONS,
            settings.REVIEW_SUGGEST_APPROVAL_PERCENT,
            settings.REVIEW_SUGGEST_RECENT,
        )


@dataclass(frozen=True)
class Evidence:
    """One agent + operation's human decisions, counted."""

    agent_id: int
    agent: str
    operation: str
    decisions: int
    approved: int  # approved unchanged
    modified: int
    taken_over: int
    rejected: int
    recent: int  # how many of the latest decisions the "recent" rule looked at (min(M, decisions))
    recent_changes: int  # of those, how many were not plain approvals
    valued: int  # decisions that carried a value
    min_value: float | None
    max_value: float | None
    max_approved_value: float | None
    first_at: datetime
    last_at: datetime
    latest_ids: list[int]  # the latest LAST_SHOWN decided escalations, newest first

    def as_json(self) -> dict:
        """The snapshot a PolicyChange keeps (datetimes as ISO strings)."""
        data = asdict(self)
        data["first_at"], data["last_at"] = self.first_at.isoformat(), self.last_at.isoformat()
        return data


@dataclass(frozen=True)
class Found:
    """A suggestion: what to apply and the evidence for it."""

    kind: str  # Suggestion.APPROVE | Suggestion.REJECT
    below: float | None  # auto-approve's value limit (None: any value)
    evidence: Evidence
    thresholds: Thresholds

    def as_json(self) -> dict:
        return {
            "kind": self.kind,
            "below": self.below,
            **self.evidence.as_json(),
            "thresholds": asdict(self.thresholds),
        }


_HISTORY_SQL = """
WITH decided AS (
    SELECT e.id, e.agent_id, e.operation, e.decision, e.value, e.decided_at,
           ROW_NUMBER() OVER (PARTITION BY e.agent_id, e.operation ORDER BY e.decided_at DESC, e.id DESC) AS latest
    FROM {escalation} e
    WHERE e.state = %(decided)s AND e.kind = 'tool' AND e.agent_id IS NOT NULL AND e.reason = ANY(%(reasons)s)
      {scope}
), grouped AS (
    SELECT d.agent_id, d.operation,
           COUNT(*) AS decisions,
           COUNT(*) FILTER (WHERE d.decision = %(approved)s) AS approved,
           COUNT(*) FILTER (WHERE d.decision = %(modified)s) AS modified,
           COUNT(*) FILTER (WHERE d.decision = %(taken_over)s) AS taken_over,
           COUNT(*) FILTER (WHERE d.decision = %(rejected)s) AS rejected,
           COUNT(*) FILTER (WHERE d.latest <= %(recent)s) AS recent,
           COUNT(*) FILTER (WHERE d.latest <= %(recent)s AND d.decision <> %(approved)s) AS recent_changes,
           COUNT(d.value) AS valued, MIN(d.value) AS min_value, MAX(d.value) AS max_value,
           MAX(d.value) FILTER (WHERE d.decision = %(approved)s) AS max_approved_value,
           MIN(d.decided_at) AS first_at, MAX(d.decided_at) AS last_at,
           ARRAY_AGG(d.id ORDER BY d.latest) FILTER (WHERE d.latest <= %(shown)s) AS latest_ids
    FROM decided d
    GROUP BY d.agent_id, d.operation
    HAVING COUNT(*) >= %(min_decisions)s
)
SELECT g.agent_id, a.name, g.operation, g.decisions, g.approved, g.modified, g.taken_over, g.rejected, g.recent,
       g.recent_changes, g.valued, g.min_value, g.max_value, g.max_approved_value, g.first_at, g.last_at,
       g.latest_ids
FROM grouped g JOIN {agent} a ON a.id = g.agent_id
ORDER BY a.name, g.operation
"""


def history(thresholds: Thresholds, *, agent_id: int | None = None, operation: str | None = None) -> list[Evidence]:
    """The counted decisions of every agent + operation with at least ``min_decisions`` of them (or of one)."""
    scope, params = "", {}
    if agent_id is not None:
        scope = "AND e.agent_id = %(agent_id)s AND e.operation = %(operation)s"
        params = {"agent_id": agent_id, "operation": operation}
    D = Escalation.Decision
    sql = _HISTORY_SQL.format(escalation=Escalation._meta.db_table, agent=Agent._meta.db_table, scope=scope)
    params |= {
        "decided": Escalation.State.DECIDED,
        "reasons": [str(reason) for reason in RULE_REASONS],
        "approved": D.APPROVED,
        "modified": D.MODIFIED,
        "taken_over": D.TAKEN_OVER,
        "rejected": D.REJECTED,
        "recent": thresholds.recent,
        "min_decisions": thresholds.min_decisions,
        "shown": LAST_SHOWN,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [Evidence(*row) for row in cursor.fetchall()]


def limit_above(value: float | None) -> float | None:
    """The auto-approve limit for a largest approved value: rounded up to two significant digits, strictly
    above it (480 → 490, 500 → 510, 1234 → 1300, 0.7 → 0.71); None stays None (no values: no limit)."""
    if value is None:
        return None
    if value <= 0:
        return float(math.floor(value) + 1)
    exponent = math.floor(math.log10(value)) - 1
    step = 10.0**exponent
    limit = (math.floor(value / step + 1e-9) + 1) * step
    return round(limit, max(0, -exponent))


def judge(evidence: Evidence, thresholds: Thresholds) -> Found | None:
    """The suggestion this evidence supports, if any (the rules in the module's docstring)."""
    n = evidence.decisions
    if n < thresholds.min_decisions:
        return None
    if evidence.rejected == n:
        return Found(Suggestion.REJECT, None, evidence, thresholds)
    # Integers only: 49 of 50 is exactly 98 %, 47 of 48 (97.9 %) is not.
    if evidence.approved * 100 >= thresholds.approval_percent * n and evidence.recent_changes == 0:
        return Found(Suggestion.APPROVE, limit_above(evidence.max_approved_value), evidence, thresholds)
    return None


def covered(found: Found, rows: list[EscalationPolicy]) -> bool:
    """Whether the policy row that applies to this agent + operation already decides it that way."""
    row = policy_for(found.evidence.agent, found.evidence.operation, rows=rows)
    if found.kind == Suggestion.REJECT:
        return row.auto_decision == AutoDecision.REJECT
    if row.auto_decision != AutoDecision.APPROVE:
        return False
    return row.auto_approve_below is None or (found.below is not None and row.auto_approve_below >= found.below)


def _dismissed(found: Found, dismissals: dict, thresholds: Thresholds) -> bool:
    seen = dismissals.get((found.evidence.agent_id, found.evidence.operation, found.kind))
    return seen is not None and found.evidence.decisions < seen + thresholds.recent


def policy_rows() -> list[EscalationPolicy]:
    """The enabled policy rows as the database has them now (not the per-process cache, which lags a
    second behind a change this process just made)."""
    return list(EscalationPolicy.objects.filter(enabled=True).select_related("agent"))


def find(
    thresholds: Thresholds | None = None, *, agent_id: int | None = None, operation: str | None = None
) -> list[Found]:
    """The standing suggestions (of every agent + operation, or of one), not covered, not dismissed."""
    thresholds = thresholds or Thresholds.from_settings()
    rows = policy_rows()
    dismissals = {
        (d.agent_id, d.operation, d.suggestion): d.decisions_seen
        for d in SuggestionDismissal.objects.filter(**({"agent_id": agent_id} if agent_id is not None else {}))
    }
    found = []
    for evidence in history(thresholds, agent_id=agent_id, operation=operation):
        suggestion = judge(evidence, thresholds)
        if suggestion is None or covered(suggestion, rows) or _dismissed(suggestion, dismissals, thresholds):
            continue
        found.append(suggestion)
    return found


def find_one(agent_id: int, operation: str, thresholds: Thresholds | None = None) -> Found | None:
    """The standing suggestion for one agent + operation (re-checked when a person applies or dismisses it)."""
    found = find(thresholds, agent_id=agent_id, operation=operation)
    return found[0] if found else None


def last_decisions(found: list[Found]) -> dict[tuple[int, str], list[Escalation]]:
    """The latest decided escalations of each suggestion's agent + operation (``Evidence.latest_ids``: the
    history query found them), newest first — one primary-key query for all."""
    ids = [pk for item in found for pk in item.evidence.latest_ids]
    rows = Escalation.objects.select_related("decided_by").in_bulk(ids)
    return {
        (item.evidence.agent_id, item.evidence.operation): [rows[pk] for pk in item.evidence.latest_ids if pk in rows]
        for item in found
    }
