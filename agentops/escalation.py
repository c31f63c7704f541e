"""The escalation hooks runs use: the policy that decides when a tool call needs a human, and where
the request for a decision goes.

Minimal for now (the review app brings the admin-editable policy and the live queue): the seed's rules
with their default thresholds, and the waiting step itself is the escalation (its id is the step's).
Decisions arrive through agentops.actions.decide_step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentops.runtime.context import Verdict

SENSITIVE_PREFIXES = ("delete", "modify", "send")
LOW_CONFIDENCE = 0.7
HIGH_VALUE = 1000.0
MAX_RETRIES = 3


class SeedToolPolicy:
    """The seed's rules: sensitive operations (high), high value > 1000 (high), confidence < 0.7
    (medium), retry count ≥ 3 (low). The first rule that fires wins, in priority order."""

    def evaluate(
        self, tool: str, args: Mapping[str, Any], *, value: float | None, confidence: float | None, retry_count: int
    ) -> Verdict:
        if tool.lower().startswith(SENSITIVE_PREFIXES):
            return Verdict(True, "sensitive_operation", "high", "sensitive_operation")
        if value is not None and value > HIGH_VALUE:
            return Verdict(True, "high_value_decision", "high", "high_value_decision")
        if confidence is not None and confidence < LOW_CONFIDENCE:
            return Verdict(True, "low_confidence", "medium", "low_confidence")
        if retry_count >= MAX_RETRIES:
            return Verdict(True, "max_retries_exceeded", "low", "max_retries_exceeded")
        return Verdict(False)


def tool_policy(agent_name: str = "") -> SeedToolPolicy:
    return SeedToolPolicy()


def open_escalation(run, step, *, reason: str, priority: str, payload: dict) -> int:
    """Record what the human must decide; returns the escalation id (here: the step's id)."""
    step.decision = None
    step.arguments = {**(step.arguments or {}), "escalation": {"reason": reason, "priority": priority, **payload}}
    return step.pk
