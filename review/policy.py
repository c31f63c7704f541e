"""The escalation policy: does this action need a human, why, and how urgently.

Rules (thresholds in EscalationPolicy rows, admin-editable, per agent and per operation):
sensitive operation (a listed word — delete, modify, send — is one of the name's words), high value
(> 1000), low confidence (< 0.7), retry count (≥ 3); plus all_fallbacks_failed and budget_exceeded, raised by
the guard and the budgets.

Sensitive words match the operation name's *word parts*, anywhere in the name (the seed's
``any(s in operation)``, without its false positives): the name is split on ``_ - . /``, spaces and case
changes and lowercased, so ``gmail_send_message``, ``bulk_delete``, ``sendEmail`` and ``files/delete``
contain "send" / "delete", while ``sender_lookup``, ``undeleted_items`` and ``sendmail`` do not (a part must
*equal* a listed word). A listed entry of several words (``send_email``) matches those parts in a row.
When several rules fire, the most urgent wins (ties: the order above). Rows are cached per process and
reloaded when the runtime config version changes (every policy save bumps it).

A row may decide at once instead (``auto_decision``, usually applied from a suggestion, review.suggestions):
auto-reject answers every request rejected; auto-approve answers approved whatever rule would fire — every
request when ``auto_approve_below`` is blank, else only one whose value is below it (a request with no value
cannot show it is below the limit, so the rules decide it, like one at or above the limit).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache

from agentops.config.source import config_source
from agentops.runtime.context import Verdict
from review.models import AUTO_APPROVED, AUTO_REJECTED, PRIORITY_ORDER, AutoDecision, EscalationPolicy, Reason

DEFAULT = EscalationPolicy()  # unsaved: the seed's thresholds and priorities


@dataclass(frozen=True)
class PolicyVerdict:
    escalate: bool
    reason: str | None = None
    priority: str | None = None
    rule: str | None = None
    deadline_seconds: int = 600
    reject: bool = False  # a row's auto-reject answered: rejected at once, no escalation (escalate is False)


ALLOW = PolicyVerdict(False)

_lock = threading.Lock()
_cache: tuple[object, list[EscalationPolicy]] | None = None


def _policies() -> list[EscalationPolicy]:
    global _cache
    config = config_source().get()  # a new object after every reload (a policy save bumps the version)
    with _lock:
        if _cache is None or _cache[0] is not config:
            rows = list(EscalationPolicy.objects.filter(enabled=True).select_related("agent"))
            _cache = (config, rows)
        return _cache[1]


def policy_for(agent_name: str | None, operation: str | None, *, rows=None) -> EscalationPolicy:
    """The most specific enabled policy for this agent and operation (else the seed's defaults), among
    ``rows`` when given (enabled rows with their agent), else the process's cached rows."""
    best, best_score = DEFAULT, -1
    for row in _policies() if rows is None else rows:
        if row.agent_id and (row.agent is None or row.agent.name != agent_name):
            continue
        if row.operation and row.operation != operation:
            continue
        score = (2 if row.agent_id else 0) + (1 if row.operation else 0)
        if score > best_score:
            best, best_score = row, score
    return best


def deadline_of(policy: EscalationPolicy) -> int:
    """Seconds a reviewer has for an escalation under `policy`: its own deadline, else the runtime settings'
    human timeout (admin-editable, read through the runtime config like every other timeout)."""
    if policy.deadline_seconds:
        return policy.deadline_seconds
    return max(5, round(config_source().get().timeouts.human))


_SEPARATORS = re.compile(r"[\s_\-./]+")
# Within one separated piece: an acronym (HTTP in HTTPDelete), a capitalised or lower-case word, or digits.
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[^\W\d_]+")


@lru_cache(maxsize=4096)
def word_parts(name: str) -> tuple[str, ...]:
    """``name`` as lower-case words: split on ``_ - . /``, whitespace and case changes
    (``bulkDelete_v2`` → ``("bulk", "delete", "v", "2")``)."""
    return tuple(word.lower() for piece in _SEPARATORS.split(name) for word in _WORDS.findall(piece))


def sensitive_words(listed: str) -> tuple[tuple[str, ...], ...]:
    """The policy's comma-separated list, each entry as its word parts (empty entries dropped)."""
    return tuple(parts for entry in listed.split(",") if (parts := word_parts(entry.strip())))


def sensitive_match(operation: str, listed: tuple[tuple[str, ...], ...]) -> str | None:
    """The first listed entry whose words appear, in a row, among ``operation``'s word parts."""
    parts = word_parts(operation)
    for entry in listed:
        size = len(entry)
        if any(parts[i : i + size] == entry for i in range(len(parts) - size + 1)):
            return " ".join(entry)
    return None


def _scope(policy: EscalationPolicy) -> str:
    if policy.pk is None:
        return "default"
    return f"policy #{policy.pk} ({policy.agent.name if policy.agent_id else 'any agent'}/{policy.operation or 'any'})"


def auto_verdict(policy: EscalationPolicy, value: float | None) -> PolicyVerdict | None:
    """The row's own decision at once (auto-approve / auto-reject), or None: its rules decide."""
    if policy.auto_decision == AutoDecision.REJECT:
        return PolicyVerdict(False, AUTO_REJECTED, rule=f"auto-reject · {_scope(policy)}", reject=True)
    if policy.auto_decision != AutoDecision.APPROVE:
        return None
    limit = policy.auto_approve_below
    if limit is None:
        return PolicyVerdict(False, AUTO_APPROVED, rule=f"auto-approve, any value · {_scope(policy)}")
    if value is not None and value < limit:
        return PolicyVerdict(False, AUTO_APPROVED, rule=f"auto-approve: value {value:g} < {limit:g} · {_scope(policy)}")
    return None


def evaluate(
    agent_name: str | None,
    operation: str,
    *,
    value: float | None = None,
    confidence: float | None = None,
    retry_count: int = 0,
) -> PolicyVerdict:
    """allow, or escalate(reason, priority) naming the rule that fired — unless the row decides at once."""
    policy = policy_for(agent_name, operation)
    if (auto := auto_verdict(policy, value)) is not None:
        return auto
    listed = sensitive_words(policy.sensitive_prefixes)
    fired = []
    word = sensitive_match(operation, listed) if listed else None
    if word is not None:
        fired.append(
            (
                Reason.SENSITIVE_OPERATION,
                policy.priority_sensitive_operation,
                f"operation name has the word {word!r} (sensitive words: {', '.join(' '.join(e) for e in listed)})",
            )
        )
    if value is not None and value > policy.high_value_above:
        fired.append(
            (
                Reason.HIGH_VALUE_DECISION,
                policy.priority_high_value_decision,
                f"value {value:g} > {policy.high_value_above:g}",
            )
        )
    if confidence is not None and confidence < policy.low_confidence_below:
        fired.append(
            (
                Reason.LOW_CONFIDENCE,
                policy.priority_low_confidence,
                f"confidence {confidence:g} < {policy.low_confidence_below:g}",
            )
        )
    if retry_count >= policy.max_retries:
        fired.append(
            (
                Reason.MAX_RETRIES_EXCEEDED,
                policy.priority_max_retries_exceeded,
                f"retry count {retry_count} >= {policy.max_retries}",
            )
        )
    if not fired:
        return ALLOW
    reason, priority, why = min(fired, key=lambda f: PRIORITY_ORDER[f[1]])
    return PolicyVerdict(True, str(reason), str(priority), f"{why} · {_scope(policy)}", deadline_of(policy))


def verdict_for_reason(agent_name: str | None, operation: str, reason: str) -> PolicyVerdict:
    """For escalations raised outside the rules (all_fallbacks_failed, budget_exceeded)."""
    policy = policy_for(agent_name, operation)
    priority = getattr(policy, f"priority_{reason}", "high")
    return PolicyVerdict(True, reason, str(priority), f"{reason} · {_scope(policy)}", deadline_of(policy))


class ReviewToolPolicy:
    """The runtime's ToolPolicy for one agent, backed by the rules above."""

    def __init__(self, agent_name: str):
        self.agent_name = agent_name

    def evaluate(self, tool, args, *, value, confidence, retry_count):
        verdict = evaluate(self.agent_name, tool, value=value, confidence=confidence, retry_count=retry_count)
        return Verdict(verdict.escalate, verdict.reason, verdict.priority, verdict.rule, reject=verdict.reject)
