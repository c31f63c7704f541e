"""The escalation hooks runs use, backed by the review app: the admin-editable policy decides when a
tool call needs a human, and every such step opens an Escalation in the live review queue. Decisions
come back through review.actions.decide → agentops.runs.actions.decide_step, which resumes the run."""

from __future__ import annotations


def tool_policy(agent_name: str = ""):
    from review.policy import ReviewToolPolicy

    return ReviewToolPolicy(agent_name)


def open_escalation(run, step, *, reason: str, priority: str, payload: dict) -> int:
    """Create the escalation for a waiting step (inside the step's transaction); returns its id."""
    from review import actions as review_actions
    from review.policy import policy_for, verdict_for_reason

    agent_name = run.agent.name
    operation = payload.get("tool") or payload.get("operation") or step.name
    if step.kind == "llm":  # raised by the guard's fallback chain, not by a policy rule
        verdict = verdict_for_reason(agent_name, operation, reason)
        priority, rule, deadline = verdict.priority, verdict.rule, verdict.deadline_seconds
    else:
        rule, deadline = payload.get("rule") or "", policy_for(agent_name, operation).deadline_seconds
    context = dict(payload.get("context") or {})
    context.setdefault("user_input", run.input)
    if step.kind == "llm":
        context.setdefault("messages", payload.get("messages"))
        context.setdefault("hops", payload.get("hops"))
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
