"""The openai-agents SDK, unmodified, pointed at the gateway's ``/v1`` (issue 16, item 6): an agent on
``OpenAIChatCompletionsModel`` answering, a function tool round trip, a risky tool call held by the
gateway's tool review until a reviewer approves it in the browser, and an agent on the SDK's default
model (the Responses API) once the gateway serves it.

The agent runs in its own process with the Python of .run/venv-agents (``agents_python``; the SDK's
websockets cap keeps it out of .venv) — agents_client.py, which prints what the SDK returned and the
headers of every HTTP answer it got."""

from __future__ import annotations

import subprocess

import pytest
from playwright.sync_api import expect

from agentops.runs.models import Agent
from review.models import Escalation
from tests.fixtures.browser import login, screenshot
from tests.fixtures.people import ALICE
from tests.fixtures.waiting import wait_for
from tests.integration.compat.conftest import AGENT_ENV, agent_result, assert_guarded, ledger_rows
from tests.integration.gateway.conftest import MOCK_A

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "What is the capital of France?"


def assert_matches_ledger(result: dict, agent: str) -> None:
    """One ledger row per model call the SDK made, with the tokens the SDK counted; every answer guarded."""
    calls = result["per_call"]
    assert result["usage"]["requests"] == len(calls) == len(result["http"])
    for answer in result["http"]:
        assert answer["status"] == 200
        assert_guarded(answer)
    rows = ledger_rows(agent, len(calls))
    assert [(r.model, r.input_tokens, r.output_tokens) for r in rows] == [
        (MOCK_A, c["input_tokens"], c["output_tokens"]) for c in calls
    ]
    assert result["usage"]["input_tokens"] == sum(r.input_tokens for r in rows)


def test_an_agent_on_chat_completions_answers(run_agent, make_key):
    result = run_agent("chat", make_key("compat-ag-chat"), QUESTION, MOCK_A)
    assert result["final_output"] == f"Mock answer to: {QUESTION}"
    assert result["raw_model_class"] == "ModelResponse" and result["usage"]["output_tokens"] > 0
    assert_matches_ledger(result, "compat-ag-chat")


def test_a_function_tool_round_trip(run_agent, make_key):
    result = run_agent("tool", make_key("compat-ag-tool"), "What is the weather in Paris?", MOCK_A)
    assert result["ran"] == ["lookup_weather(Paris)"]
    assert result["final_output"] == "Mock answer from the tool: sunny in Paris"
    assert_matches_ledger(result, "compat-ag-tool")  # two model calls: the tool call, then the answer


def test_an_agent_on_the_default_responses_model_answers(run_agent, make_key, endpoint):
    endpoint("/responses")
    result = run_agent("responses", make_key("compat-ag-responses"), QUESTION, MOCK_A)
    assert result["model_class"] == "default"  # a model name: the SDK's default, OpenAIResponsesModel
    assert result["final_output"] == f"Mock answer to: {QUESTION}"
    assert_matches_ledger(result, "compat-ag-responses")


@pytest.mark.browser
def test_a_risky_tool_call_is_held_until_a_reviewer_approves_it_in_the_browser(
    agent_command, make_key, gateway_web, page, alice
):
    """The agent's gateway tool review is ``hold``: the answer asking for ``delete_account`` waits while
    alice opens the escalation in /review/ and approves it; then the SDK gets the call, runs the tool and
    the agent finishes from its result."""
    key = make_key("compat-ag-risky")
    Agent.objects.filter(name="compat-ag-risky").update(gateway_tool_review="hold")
    agent = subprocess.Popen(
        agent_command("risky", key, "Close the acme account.", MOCK_A),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=AGENT_ENV,
    )
    try:
        pending = Escalation.objects.filter(agent__name="compat-ag-risky", state="pending")
        escalation = wait_for(pending.first, timeout=30, message="the held delete_account call's escalation")
        assert escalation.operation == "delete_account" and escalation.arguments == {"account": "acme"}
        assert agent.poll() is None  # the SDK is still waiting for its answer

        base = gateway_web.extra["url"]
        login(page, base, ALICE)
        page.goto(f"{base}/review/{escalation.pk}/")
        page.wait_for_selector("#review-page[data-live='open']", timeout=10000)
        expect(page.locator("#review-page")).to_contain_text("delete_account")
        screenshot(page, "compat-agents-risky-tool")
        page.click("#act-approve")
        expect(page.locator("body")).to_contain_text("pproved")

        stdout, stderr = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.communicate()
    result = agent_result((stdout, stderr), agent.returncode)
    assert result["ran"] == ["delete_account(acme)"]  # approved as is: the SDK ran the tool
    assert result["final_output"] == "Mock answer from the tool: account acme deleted"
    decided = Escalation.objects.select_related("decided_by").get(pk=escalation.pk)
    assert (decided.decision, decided.decided_by.username) == ("approved", "alice")
    assert_matches_ledger(result, "compat-ag-risky")
