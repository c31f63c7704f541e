"""The human in the gateway, like in runs (issue 16, item 4): an agent whose ``gateway_human`` is ``hold``
gets a call that a budget set to escalate blocks, or whose every upstream failed, held for a reviewer —
who approves it (the call goes ahead once, past the block: one ledger row), takes it over (their text is
the assistant message, usage zero, the ledger row says a human answered) or rejects it (the error the
client would have got). A hold nobody decides, or whose client leaves, closes its escalation. ``fail``
keeps the 429 / 503 at once. Streamed requests are held the same way and streamed once decided.

The official ``openai`` SDK talks to the gateway under uvicorn; the fault-injecting mock is the upstream;
a reviewer decides through ``review.actions`` in a thread of the test process, and once in Chromium."""

from __future__ import annotations

import threading

import openai
import pytest
from playwright.sync_api import expect

from agentops.runs.models import Agent
from budgets.actions import budgets as budget_actions
from budgets.models import Budget, UsageRecord
from review import actions as review
from review.models import AuditEvent, Escalation
from tests.fixtures.browser import login, screenshot
from tests.fixtures.people import ALICE
from tests.fixtures.stack import SHORT_HOLD_SECONDS, Proc
from tests.fixtures.waiting import wait_for
from tests.integration.gateway.conftest import MOCK_A, MOCK_B, ROUTE
from tests.integration.gateway.test_gateway import settled
from tests.integration.gateway.test_tool_review import reviewer_deciding

pytestmark = pytest.mark.django_db(transaction=True)

ASK = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France?"},
]
ANSWER = "Mock answer to: What is the capital of France?"
WRITTEN = "Paris — written by a reviewer."


def holding(client, make_key, agent: str, human: str = "hold", **options) -> openai.OpenAI:
    """An SDK client of a new agent whose ``gateway_human`` is ``human``."""
    key = make_key(agent)
    Agent.objects.filter(name=agent).update(gateway_human=human)
    return client(key, timeout=30, **options)


def blocked_by_budget(agent: str, on_block: str = "escalate") -> Budget:
    """A 10-token budget of ``agent``: every call of it is refused."""
    return budget_actions.save_budget(
        Budget(name=f"{agent}-tiny", scope="agent", scope_key=agent, limit_tokens=10, timezone="UTC", on_block=on_block)
    )


def every_upstream_failing(mock) -> None:
    mock.rates(MOCK_A, {"503": 1.0})
    mock.rates(MOCK_B, {"503": 1.0})


def the_escalation(agent: str) -> Escalation:
    [escalation] = Escalation.objects.filter(agent__name=agent)
    return escalation


def ledger_of(agent: str) -> list[UsageRecord]:
    return list(UsageRecord.objects.filter(agent=agent).order_by("id"))


# --- a budget set to escalate ----------------------------------------------------------------------------


def test_a_budget_block_is_held_and_the_approved_call_goes_ahead_once(client, make_key, mock):
    sdk = holding(client, make_key, "hh-budget")
    blocked_by_budget("hh-budget")
    reviewer = reviewer_deciding(1, lambda e: ("approved", {"comment": "worth it"}))
    raw = sdk.chat.completions.with_raw_response.create(model=MOCK_A, messages=ASK, max_tokens=50)
    reviewer.join()
    answer = raw.parse()
    assert answer.choices[0].message.content == ANSWER and answer.model == MOCK_A
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    escalation = the_escalation("hh-budget")
    assert raw.headers["x-agentops-escalations"] == str(escalation.pk)
    assert raw.headers["x-agentops-handler"] == "primary" and raw.headers["x-agentops-model"] == MOCK_A
    assert mock.stats()["by_model"][MOCK_A] == 1  # asked once, after the approval

    # the approval screen showed the request: model, messages, why
    assert (escalation.reason, escalation.source, escalation.kind) == ("budget_exceeded", "gateway", "llm")
    assert escalation.operation == "chat" and escalation.arguments["model"] == MOCK_A
    assert escalation.context["user_input"] == ASK[1]["content"]
    assert [m["role"] for m in escalation.context["messages"]] == ["system", "user"]
    assert "Budget 'hh-budget-tiny' blocks this call" in escalation.context["agent_analysis"]
    assert escalation.approvable and not escalation.modifiable

    [row] = wait_for(settled("hh-budget", 1), timeout=10)
    assert (row.model, row.source) == (MOCK_A, "gateway")
    assert (row.input_tokens, row.output_tokens) == (answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert row.reservation_id is None  # past the block: nothing was reserved
    assert len(ledger_of("hh-budget")) == 1  # written once


def test_a_rejected_budget_hold_answers_openais_quota_error(client, make_key, mock):
    sdk = holding(client, make_key, "hh-reject")
    blocked_by_budget("hh-reject")
    reviewer = reviewer_deciding(1, lambda e: ("rejected", {"comment": "not today"}))
    with pytest.raises(openai.RateLimitError) as quota:
        sdk.chat.completions.create(model=MOCK_A, messages=ASK, max_tokens=50)
    reviewer.join()
    assert (quota.value.status_code, quota.value.code) == (429, "insufficient_quota")
    assert "hh-reject-tiny" in quota.value.message and "A reviewer rejected it: not today" in quota.value.message
    assert quota.value.response.headers["x-should-retry"] == "false"
    assert mock.stats()["by_model"].get(MOCK_A, 0) == 0 and ledger_of("hh-reject") == []
    assert the_escalation("hh-reject").decision == "rejected"


def test_a_held_stream_is_streamed_once_approved(client, make_key, mock):
    sdk = holding(client, make_key, "hh-stream-ok")
    blocked_by_budget("hh-stream-ok")
    reviewer = reviewer_deciding(1, lambda e: ("approved", {}))
    chunks = list(
        sdk.chat.completions.create(
            model=MOCK_A, messages=ASK, max_tokens=50, stream=True, stream_options={"include_usage": True}
        )
    )
    reviewer.join()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert chunks[-1].usage.completion_tokens > 0
    [row] = wait_for(settled("hh-stream-ok", 1), timeout=10)
    assert row.output_tokens == chunks[-1].usage.completion_tokens
    assert len(ledger_of("hh-stream-ok")) == 1


# --- every upstream failed --------------------------------------------------------------------------------


def test_every_upstream_failing_is_held_and_the_reviewers_text_is_the_answer(client, make_key, mock):
    sdk = holding(client, make_key, "hh-takeover")
    every_upstream_failing(mock)
    reviewer = reviewer_deciding(1, lambda e: ("taken_over", {"result": WRITTEN}))
    raw = sdk.chat.completions.with_raw_response.create(model=ROUTE, messages=ASK)
    reviewer.join()
    answer = raw.parse()
    assert answer.choices[0].message.content == WRITTEN and answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (0, 0, 0)
    assert raw.headers["x-agentops-handler"] == "human" and raw.headers["x-agentops-model"] == "human"
    escalation = the_escalation("hh-takeover")
    assert (escalation.reason, escalation.kind) == ("all_fallbacks_failed", "llm")
    assert not escalation.approvable
    assert {hop["target"] for hop in escalation.context["hops"]} >= {f"mock:{MOCK_A}", f"mock:{MOCK_B}"}
    assert "Every upstream for gw-route failed" in escalation.context["agent_analysis"]
    # the why on the error taxonomy: every upstream answered 503, a dependency (system) failure
    error = escalation.context["error"]
    assert (error["class"], error["category"], error["kind"]) == ("ServiceUnavailable", "dependency", "system")

    [row] = wait_for(settled("hh-takeover", 1), timeout=10)
    assert (row.model, row.provider, row.input_tokens, row.output_tokens) == ("human", "human", 0, 0)
    assert row.cost_usd == 0 and row.source == "gateway"


def test_a_held_stream_gets_the_reviewers_text_as_a_stream(client, make_key, mock):
    sdk = holding(client, make_key, "hh-stream-human")
    every_upstream_failing(mock)
    reviewer = reviewer_deciding(1, lambda e: ("taken_over", {"result": WRITTEN}))
    chunks = list(
        sdk.chat.completions.create(model=ROUTE, messages=ASK, stream=True, stream_options={"include_usage": True})
    )
    reviewer.join()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == WRITTEN
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.total_tokens == 0
    [row] = wait_for(settled("hh-stream-human", 1), timeout=10)
    assert (row.model, row.input_tokens, row.output_tokens) == ("human", 0, 0)


def test_a_rejected_failure_hold_answers_the_503_the_client_would_have_got(client, make_key, mock):
    sdk = holding(client, make_key, "hh-fail-reject")
    every_upstream_failing(mock)
    reviewer = reviewer_deciding(1, lambda e: ("rejected", {}))
    with pytest.raises(openai.InternalServerError) as error:
        sdk.chat.completions.create(model=ROUTE, messages=ASK)
    reviewer.join()
    # the breakers the earlier tests opened may answer first: either way the 503 of "every upstream failed"
    assert error.value.status_code == 503 and error.value.code in ("upstream_unavailable", "breaker_open")
    assert "A reviewer rejected it." in error.value.message
    assert ledger_of("hh-fail-reject") == []


# --- fail: today's answers -------------------------------------------------------------------------------


def test_fail_keeps_the_429_and_the_503_at_once(client, make_key, mock):
    sdk = holding(client, make_key, "hh-fail", human="fail")
    blocked_by_budget("hh-fail")
    with pytest.raises(openai.RateLimitError) as quota:
        sdk.chat.completions.create(model=MOCK_A, messages=ASK, max_tokens=50)
    assert quota.value.code == "insufficient_quota" and "reviewer" not in quota.value.message
    budget_actions.delete_budget(Budget.objects.get(name="hh-fail-tiny").pk)
    every_upstream_failing(mock)
    with pytest.raises(openai.InternalServerError) as error:
        sdk.chat.completions.create(model=ROUTE, messages=ASK)
    assert error.value.status_code == 503
    assert not Escalation.objects.filter(agent__name="hh-fail").exists()


def test_a_budget_that_fails_instead_of_escalating_is_not_held(client, make_key, mock):
    sdk = holding(client, make_key, "hh-budget-fails")
    blocked_by_budget("hh-budget-fails", on_block="fail")
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model=MOCK_A, messages=ASK, max_tokens=50)
    assert not Escalation.objects.filter(agent__name="hh-budget-fails").exists()


# --- nobody waits: the client left ------------------------------------------------------------------------


def test_a_client_that_leaves_a_held_call_closes_its_escalation(client, make_key, mock):
    sdk = holding(client, make_key, "hh-leaves")
    blocked_by_budget("hh-leaves")
    with pytest.raises(openai.APITimeoutError):
        sdk.with_options(timeout=1).chat.completions.create(model=MOCK_A, messages=ASK, max_tokens=50)
    escalation = wait_for(
        lambda: Escalation.objects.filter(agent__name="hh-leaves", state="expired").first(),
        timeout=10,
        message="the escalation closed after the client left",
    )
    [event] = AuditEvent.objects.filter(escalation=escalation, event=review.WAITER_GAVE_UP)
    assert (event.data["channel"], event.data["why"]) == ("gateway", "the client disconnected")
    with pytest.raises(review.DecisionConflict, match="Already closed: the agent stopped waiting"):
        review.decide(escalation.pk, ALICE.user(), "approved")
    assert mock.stats()["by_model"].get(MOCK_A, 0) == 0 and ledger_of("hh-leaves") == []


# --- in the browser ---------------------------------------------------------------------------------------


@pytest.mark.browser
def test_a_reviewer_approves_a_held_call_in_the_browser(gateway, gateway_web, client, make_key, mock, page, alice):
    sdk = holding(client, make_key, "hh-browser")
    blocked_by_budget("hh-browser")
    answers: list = []
    caller = threading.Thread(
        target=lambda: answers.append(sdk.chat.completions.create(model=MOCK_A, messages=ASK, max_tokens=50))
    )
    caller.start()
    escalation = wait_for(lambda: Escalation.objects.filter(agent__name="hh-browser").first(), timeout=15)
    base = gateway_web.extra["url"]
    login(page, base, ALICE)
    page.goto(f"{base}/review/{escalation.pk}/")
    expect(page.locator("#proposed-arguments")).to_contain_text(MOCK_A)
    expect(page.locator("#user-input")).to_contain_text("What is the capital of France?")
    expect(page.locator("#request-messages li")).to_have_count(2)
    expect(page.locator("#request-messages")).to_contain_text("You are terse.")
    expect(page.locator("#agent-analysis")).to_contain_text("Budget 'hh-browser-tiny' blocks this call")
    expect(page.locator("#llm-hint")).to_contain_text("approve lets the call go ahead once")
    expect(page.locator("#modify-box")).to_have_count(0)
    screenshot(page, "review-gateway-budget-hold")
    page.click("#act-approve")
    caller.join(timeout=20)
    assert not caller.is_alive()
    [answer] = answers
    assert answer.choices[0].message.content == ANSWER
    decided = Escalation.objects.get(pk=escalation.pk)
    assert (decided.state, decided.decision, decided.decided_by.username) == ("decided", "approved", "alice")
    wait_for(settled("hh-browser", 1), timeout=10)
    assert len(ledger_of("hh-browser")) == 1


# --- nobody decided in time -------------------------------------------------------------------------------

HOLD_SECONDS = SHORT_HOLD_SECONDS


@pytest.fixture
def short_hold_web(short_hold_gateway_web) -> Proc:
    """The session's second gateway process, which holds answers for only HOLD_SECONDS."""
    return short_hold_gateway_web


def test_a_hold_nobody_decides_ends_with_the_error_and_closes_the_escalation(gateway, short_hold_web, make_key, mock):
    key = make_key("hh-expiry")
    Agent.objects.filter(name="hh-expiry").update(gateway_human="hold")
    blocked_by_budget("hh-expiry")
    sdk = openai.OpenAI(base_url=short_hold_web.extra["url"] + "/v1", api_key=key, max_retries=0, timeout=30)
    with pytest.raises(openai.RateLimitError) as quota:
        sdk.chat.completions.create(model=MOCK_A, messages=ASK, max_tokens=50)
    assert quota.value.code == "insufficient_quota" and "No reviewer decided on it in time." in quota.value.message
    escalation = the_escalation("hh-expiry")
    assert (escalation.state, escalation.decision) == ("expired", "rejected")
    [event] = AuditEvent.objects.filter(escalation=escalation, event=review.WAITER_GAVE_UP)
    assert event.data["why"] == f"the hold ended after {HOLD_SECONDS} s"
    assert HOLD_SECONDS <= event.data["waited_seconds"] < HOLD_SECONDS + 3
    assert mock.stats()["by_model"].get(MOCK_A, 0) == 0 and ledger_of("hh-expiry") == []
