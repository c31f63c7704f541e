"""The review queue as runs use it: the escalation port of agentops/runs/ports.py, implemented with review's
actions, policy and models (agentops/wiring.py installs it). The admin-editable policy decides when a tool call
needs a human, and every such step opens an Escalation in the live review queue. Decisions come back through
review.actions.decide → agentops.runs.actions.lifecycle.decide_step, which resumes the run."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agentops.runtime.errors import Classified, from_hops
from review import actions as review_actions
from review.models import Escalation
from review.policy import ReviewToolPolicy, deadline_of, policy_for, verdict_for_reason


def tool_policy(agent_name: str = "") -> ReviewToolPolicy:
    return ReviewToolPolicy(agent_name)


def open_escalation(run, step, *, reason: str, priority: str, payload: Mapping[str, Any]) -> int:
    """Create the escalation for a waiting step (inside the step's transaction); returns its id."""
    agent_name = run.agent.name
    operation = payload.get("tool") or payload.get("operation") or step.name
    if step.kind == "llm":  # raised by the guard's fallback chain, not by a policy rule
        verdict = verdict_for_reason(agent_name, operation, reason)
        priority, rule, deadline = verdict.priority, verdict.rule, verdict.deadline_seconds
    else:
        rule, deadline = payload.get("rule") or "", deadline_of(policy_for(agent_name, operation))
    context = dict(payload.get("context") or {})
    context.setdefault("user_input", run.input)
    if step.kind == "llm":
        context.setdefault("messages", payload.get("messages"))
        context.setdefault("hops", payload.get("hops"))
    failure = _failure(payload) if reason in FAILURE_REASONS else None
    if failure is not None:  # why, on the error taxonomy: the approval screen says it in words
        context["error"] = failure
        rule = f"{rule or reason} · {failure_words(failure)}"[:200]
    escalation = review_actions.create_escalation(
        run=run,
        step_seq=step.seq,
        agent=run.agent,
        session_id=run.session_id,
        source="run",
        kind=step.kind,
        operation=operation,
        arguments=payload.get("arguments") or {},
        value=payload.get("value"),
        confidence=payload.get("confidence"),
        retry_count=payload.get("retry_count") or 0,
        context=context,
        reason=reason,
        priority=priority,
        rule=rule or "",
        deadline_seconds=deadline,
    )
    return escalation.pk


FAILURE_REASONS = ("all_fallbacks_failed", "max_retries_exceeded")


def _failure(payload: Mapping[str, Any]) -> dict | None:
    """The classified failure behind an escalation: the fallback chain's last error (from its hops), or the
    last error of the tool the agent kept retrying (``RunContext`` sends it as ``last_error``)."""
    recorded = payload.get("last_error")
    if isinstance(recorded, dict) and recorded.get("class"):
        return recorded
    found: Classified | None = from_hops(payload.get("hops"))
    return found.to_dict() if found is not None else None


def failure_words(failure: Mapping[str, Any]) -> str:
    """``last error RateLimitError (system: resource)`` — the short form kept in the escalation's rule."""
    return f"last error {failure.get('class')} ({failure.get('kind')}: {failure.get('category')})"


class ReviewEscalations:
    """agentops.runs.ports.EscalationPort over the review queue."""

    def tool_policy(self, agent_name: str) -> ReviewToolPolicy:
        return tool_policy(agent_name)

    def open_for_step(self, run, step, *, reason: str, priority: str, payload: Mapping[str, Any]) -> int:
        return open_escalation(run, step, reason=reason, priority=priority, payload=payload)

    def withdraw_for_run(self, run_pk: int, *, why: str) -> int:
        return review_actions.withdraw_for_run(run_pk, why=why)

    def by_id(self, ids: Iterable[int]) -> dict[int, Escalation]:
        return Escalation.objects.select_related("claimed_by", "decided_by").in_bulk(list(ids))

    def visible_ids(self, user, ids: Iterable[int]) -> set[int]:
        return set(Escalation.objects.visible_to(user).filter(pk__in=list(ids)).values_list("pk", flat=True))
