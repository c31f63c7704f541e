"""The escalation policy: each rule, its threshold edges and priority, the most urgent rule winning, and
per agent / per operation / agent + operation rows (saved through agentops.actions, which bumps the
runtime config version so every process reloads the rows)."""

from __future__ import annotations

import pytest

from agentops.config import actions as config_actions
from agentops.config.source import config_source
from agentops.runs.actions import agents as agent_actions
from review.models import EscalationPolicy
from review.policy import ReviewToolPolicy, evaluate, policy_for, verdict_for_reason
from tests.fixtures.stack import reseed_runtime
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def defaults(redis_client):
    """Flushes between transactional tests remove the migration's seed rows; put them back."""
    reseed_runtime()
    config_source().invalidate()


@pytest.fixture
def agents(defaults):
    return agent_actions.ensure_agent("t-approval"), agent_actions.ensure_agent("t-other")


def save_policy(**fields) -> EscalationPolicy:
    """Save a policy row the way the admin does; in this process reload at once (other processes do
    within about a second, see test_a_saved_policy_reaches_the_cache_through_the_version_bump)."""
    row = EscalationPolicy(**fields)
    config_actions.save_runtime_object(row)
    config_source().invalidate()
    return row


def escalates(verdict, reason: str, priority: str) -> bool:
    return verdict.escalate and (verdict.reason, verdict.priority) == (reason, priority)


# --- each rule, its edges and its default priority ----------------------------------------------
@pytest.mark.parametrize(
    ("operation", "fires"),
    [
        ("send_note", True),
        ("delete_account", True),
        ("modify_order", True),
        ("Send_Email", True),  # words match whatever the case
        ("gmail_send_message", True),  # anywhere in the name (the seed's any(s in operation))
        ("bulk_delete", True),
        ("sendEmail", True),  # a case change splits words
        ("files/delete", True),
        ("crm.records-modify", True),
        ("HTTPDelete", True),
        ("sender_lookup", False),  # a word part must equal a listed word: "sender" is not "send"
        ("undeleted_items", False),
        ("sendmail", False),  # one word, not "send"
        ("resend_note", False),
        ("lookup_order", False),
    ],
)
def test_sensitive_operations_are_high_priority(agents, operation, fires):
    verdict = evaluate("t-approval", operation)
    if fires:
        assert escalates(verdict, "sensitive_operation", "high")
        assert "sensitive words: delete, modify, send" in verdict.rule and "default" in verdict.rule
    else:
        assert not verdict.escalate and verdict.reason is None


def test_the_sensitive_words_stay_editable_and_may_be_several_words(agents):
    save_policy(sensitive_prefixes="send email, purge")
    assert evaluate("t-approval", "gmail_send_email").rule.startswith("operation name has the word 'send email'")
    assert evaluate("t-approval", "purgeCache").reason == "sensitive_operation"
    assert not evaluate("t-approval", "send_note").escalate  # "send" alone is no longer listed
    assert not evaluate("t-approval", "email_send").escalate  # the words of an entry match in a row


@pytest.mark.parametrize(
    ("value", "fires"), [(None, False), (0, False), (1000, False), (1000.01, True), (25_000, True)]
)
def test_high_value_above_1000_is_high_priority(agents, value, fires):
    verdict = evaluate("t-approval", "refund", value=value)
    assert escalates(verdict, "high_value_decision", "high") if fires else not verdict.escalate
    if fires:
        assert f"value {value:g} > 1000" in verdict.rule


@pytest.mark.parametrize(
    ("confidence", "fires"), [(None, False), (0.95, False), (0.7, False), (0.6999, True), (0.0, True)]
)
def test_confidence_below_0_7_is_medium_priority(agents, confidence, fires):
    verdict = evaluate("t-approval", "answer", confidence=confidence)
    assert escalates(verdict, "low_confidence", "medium") if fires else not verdict.escalate
    if fires:
        assert "< 0.7" in verdict.rule


@pytest.mark.parametrize(("retries", "fires"), [(0, False), (2, False), (3, True), (7, True)])
def test_three_retries_or_more_is_low_priority(agents, retries, fires):
    verdict = evaluate("t-approval", "lookup", retry_count=retries)
    assert escalates(verdict, "max_retries_exceeded", "low") if fires else not verdict.escalate
    if fires:
        assert f"retry count {retries} >= 3" in verdict.rule


def test_nothing_fires_on_an_ordinary_call(agents):
    verdict = evaluate("t-approval", "lookup_order", value=10, confidence=0.99, retry_count=0)
    assert not verdict.escalate and verdict.priority is None and verdict.rule is None


def test_rules_outside_the_thresholds_take_their_priority_from_the_policy(agents):
    for reason in ("all_fallbacks_failed", "budget_exceeded"):
        verdict = verdict_for_reason("t-approval", "planning", reason)
        assert escalates(verdict, reason, "high") and verdict.deadline_seconds == 600
        assert verdict.rule.startswith(reason)
    save_policy(agent=agents[0], priority_budget_exceeded="low")
    assert verdict_for_reason("t-approval", "planning", "budget_exceeded").priority == "low"
    assert verdict_for_reason("t-other", "planning", "budget_exceeded").priority == "high"


# --- several rules at once: the most urgent wins, ties in the documented order ---------------------
@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"confidence": 0.5, "retry_count": 5}, "low_confidence"),  # medium beats low
        ({"value": 5000, "confidence": 0.5}, "high_value_decision"),  # high beats medium
        ({"value": 5000, "retry_count": 5}, "high_value_decision"),
        ({"confidence": 0.1, "retry_count": 9, "value": 2000}, "high_value_decision"),
    ],
)
def test_the_most_severe_rule_wins(agents, kwargs, reason):
    assert evaluate("t-approval", "refund", **kwargs).reason == reason


def test_between_equally_urgent_rules_sensitive_comes_first(agents):
    verdict = evaluate("t-approval", "send_refund", value=5000, confidence=0.2, retry_count=4)
    assert escalates(verdict, "sensitive_operation", "high")


def test_edited_priorities_change_which_rule_wins(agents):
    save_policy(priority_sensitive_operation="low", priority_low_confidence="high")
    verdict = evaluate("t-approval", "send_note", confidence=0.5)
    assert escalates(verdict, "low_confidence", "high")
    assert escalates(evaluate("t-approval", "send_note"), "sensitive_operation", "low")
    # ties keep the documented order: sensitive (low) vs max retries (low) → sensitive
    assert evaluate("t-approval", "send_note", retry_count=3).reason == "sensitive_operation"


# --- the most specific row applies ---------------------------------------------------------------
def test_a_global_row_changes_every_agent(agents):
    row = save_policy(low_confidence_below=0.9, high_value_above=50, max_retries=1, deadline_seconds=120)
    for agent in ("t-approval", "t-other", None):
        assert evaluate(agent, "answer", confidence=0.8).reason == "low_confidence"
        assert evaluate(agent, "refund", value=51).reason == "high_value_decision"
        assert evaluate(agent, "lookup", retry_count=1).reason == "max_retries_exceeded"
        assert evaluate(agent, "answer", confidence=0.8).deadline_seconds == 120
    assert f"policy #{row.pk} (any agent/any)" in evaluate("t-other", "refund", value=51).rule


def test_an_agent_row_overrides_the_global_row_for_that_agent_only(agents):
    approval, _ = agents
    save_policy(low_confidence_below=0.9)
    row = save_policy(agent=approval, low_confidence_below=0.3, sensitive_prefixes="refund")
    assert not evaluate("t-approval", "answer", confidence=0.5).escalate
    assert evaluate("t-approval", "answer", confidence=0.2).reason == "low_confidence"
    assert evaluate("t-other", "answer", confidence=0.5).reason == "low_confidence"
    # this agent's sensitive list is its own
    assert not evaluate("t-approval", "send_note").escalate
    verdict = evaluate("t-approval", "refund_order")
    assert escalates(verdict, "sensitive_operation", "high") and f"policy #{row.pk} (t-approval/any)" in verdict.rule
    assert evaluate("t-other", "send_note").reason == "sensitive_operation"
    assert not evaluate("t-other", "refund_order").escalate


def test_an_operation_row_applies_to_that_operation_for_every_agent(agents):
    row = save_policy(operation="refund", high_value_above=100, priority_high_value_decision="medium")
    for agent in ("t-approval", "t-other"):
        verdict = evaluate(agent, "refund", value=150)
        assert escalates(verdict, "high_value_decision", "medium") and f"policy #{row.pk}" in verdict.rule
        assert not evaluate(agent, "transfer", value=150).escalate  # other operations keep 1000
        assert evaluate(agent, "transfer", value=1500).priority == "high"


def test_agent_and_operation_row_beats_agent_row_beats_operation_row(agents):
    approval, _ = agents
    save_policy(high_value_above=10)
    save_policy(operation="refund", high_value_above=20)
    save_policy(agent=approval, high_value_above=30)
    save_policy(agent=approval, operation="refund", high_value_above=40)
    assert policy_for("t-approval", "refund").high_value_above == 40
    assert policy_for("t-approval", "transfer").high_value_above == 30  # the agent row beats the global one
    assert policy_for("t-other", "refund").high_value_above == 20
    assert policy_for("t-other", "transfer").high_value_above == 10
    assert not evaluate("t-approval", "refund", value=35).escalate
    assert evaluate("t-approval", "refund", value=41).escalate
    assert evaluate("t-approval", "transfer", value=35).escalate


def test_an_agent_row_is_more_specific_than_an_operation_row(agents):
    approval, _ = agents
    save_policy(operation="refund", deadline_seconds=60)
    save_policy(agent=approval, deadline_seconds=90)
    assert policy_for("t-approval", "refund").deadline_seconds == 90
    assert policy_for("t-other", "refund").deadline_seconds == 60


def test_a_disabled_row_is_ignored(agents):
    approval, _ = agents
    row = save_policy(agent=approval, sensitive_prefixes="")
    assert not evaluate("t-approval", "send_note").escalate  # an empty list: nothing is sensitive
    row.enabled = False
    config_actions.save_runtime_object(row)
    config_source().invalidate()
    assert evaluate("t-approval", "send_note").reason == "sensitive_operation"


def test_the_runtime_tool_policy_speaks_the_runtimes_verdict(agents):
    from agentops.runtime.context import Verdict

    verdict = ReviewToolPolicy("t-approval").evaluate(
        "send_note", {"to": "x"}, value=None, confidence=None, retry_count=0
    )
    assert isinstance(verdict, Verdict) and verdict.escalate
    assert (verdict.reason, verdict.priority) == ("sensitive_operation", "high") and verdict.rule
    assert not ReviewToolPolicy("t-approval").evaluate("t_echo", {}, value=1, confidence=1, retry_count=0).escalate


def test_a_saved_policy_reaches_the_cache_through_the_version_bump(agents):
    """No invalidate() here: like a worker, this process notices the bumped version within ~1 s."""
    assert evaluate("t-approval", "send_note").escalate
    config_source().get()
    config_actions.save_runtime_object(EscalationPolicy(agent=agents[0], sensitive_prefixes="delete"))
    wait_for(lambda: not evaluate("t-approval", "send_note").escalate, timeout=5, message="the saved policy")
    assert evaluate("t-approval", "delete_note").escalate


def test_policy_rows_are_validated(agents):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        config_actions.save_runtime_object(EscalationPolicy(low_confidence_below=1.5))
    with pytest.raises(ValidationError):
        config_actions.save_runtime_object(EscalationPolicy(deadline_seconds=1))
    save_policy(agent=agents[0])
    with pytest.raises(ValidationError):  # one row per scope
        config_actions.save_runtime_object(EscalationPolicy(agent=agents[0]))
