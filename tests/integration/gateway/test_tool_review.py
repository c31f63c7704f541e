"""Tool review decides on the ANSWER, not on the request's shape (issue 14, item 6): every tool call and
legacy function call in every answer, streamed or not, is put to the escalation policy and, for an agent
set to ``hold``, waits for its reviewer — also calls without ids, calls sharing one id (decided each by
its position), a legacy ``function_call``, and a streamed call whose request did not list ``tools``.

The official ``openai`` SDK talks to the gateway under uvicorn; the fault-injecting mock is the upstream
and produces each provider shape (``mock_tool_calls`` entries with ``"id": null`` or a shared id; a
request listing ``functions`` gets a legacy ``function_call``). A reviewer thread in the test process
decides through ``review.actions`` while the gateway holds the answer."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import openai
import pytest

from agentops.runs.models import Agent
from review import actions as review
from review.models import AuditEvent, Escalation
from tests.fixtures.people import ALICE
from tests.fixtures.waiting import wait_for
from tests.integration.gateway.conftest import MOCK_A
from tests.integration.gateway.test_gateway import ASK, CALL, RISKY

pytestmark = pytest.mark.django_db(transaction=True)

FUNCTIONS = [{"name": RISKY["name"], "parameters": {"type": "object"}}]
TOOLS_FOR_RISKY = [{"type": "function", "function": {"name": RISKY["name"]}}]


def holding_client(client, make_key, agent: str):
    """An SDK client whose agent has every flagged call held for a reviewer."""
    key = make_key(agent)
    Agent.objects.filter(name=agent).update(gateway_tool_review="hold")
    return client(key, timeout=30)


class Reviewer(threading.Thread):
    """A reviewer working in the background; ``join()`` re-raises what went wrong (no escalation …)."""

    error: BaseException | None = None

    def run(self) -> None:
        try:
            super().run()
        except BaseException as exc:  # handed to the test by join()
            self.error = exc

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


def reviewer_deciding(count: int, choose: Callable[[Escalation], tuple[str, dict]]) -> Reviewer:
    """A started reviewer that waits for ``count`` pending escalations and decides each with
    ``choose(escalation) -> (decision, kwargs)``."""

    def work() -> None:
        def all_pending() -> list[Escalation] | None:
            pending = list(Escalation.objects.filter(state="pending").order_by("id"))
            return pending if len(pending) >= count else None

        for escalation in wait_for(all_pending, timeout=15, interval=0.05, message=f"{count} escalations"):
            decision, kwargs = choose(escalation)
            review.claim(escalation.pk, ALICE.user())
            review.decide(escalation.pk, ALICE.user(), decision, **kwargs)

    thread = Reviewer(target=work)
    thread.start()
    return thread


def by_account(escalation: Escalation) -> tuple[str, dict]:
    """Reject the call on account "acme", approve the one on "beta"."""
    if escalation.arguments.get("account") == "acme":
        return "rejected", {"comment": "not acme"}
    return "approved", {}


ACME = {**RISKY, "arguments": {"account": "acme"}}
BETA = {**RISKY, "arguments": {"account": "beta"}}


def streamed(sdk, **kwargs) -> tuple[str, dict[int, dict], list[dict], list[str]]:
    """A streamed answer as (text, tool calls by index reassembled, function_call pieces, finish reasons)."""
    text, calls, legacy, finishes = "", {}, [], []
    for chunk in sdk.chat.completions.create(model=MOCK_A, messages=ASK, stream=True, **kwargs):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        for part in choice.delta.tool_calls or ():
            call = calls.setdefault(part.index, {"name": "", "arguments": "", "id": None})
            call["id"] = call["id"] or part.id
            call["name"] += (part.function and part.function.name) or ""
            call["arguments"] += (part.function and part.function.arguments) or ""
        if choice.delta.function_call is not None:
            legacy.append(choice.delta.function_call.model_dump())
        if choice.finish_reason:
            finishes.append(choice.finish_reason)
    return text, calls, legacy, finishes


# --- answers as one body --------------------------------------------------------------------------------


def test_calls_without_ids_are_each_held_and_decided_by_position(client, make_key, mock):
    sdk = holding_client(client, make_key, "tr-noid")
    reviewer = reviewer_deciding(2, by_account)
    answer = sdk.chat.completions.create(
        model=MOCK_A, messages=ASK, extra_body={"mock_tool_calls": [{**ACME, "id": None}, {**BETA, "id": None}]}
    )
    reviewer.join()
    message = answer.choices[0].message
    assert [json.loads(c.function.arguments) for c in message.tool_calls] == [{"account": "beta"}]
    assert "`delete_account` was rejected by a reviewer: not acme" in message.content


def test_calls_sharing_one_id_are_each_decided_on_their_own(client, make_key, mock):
    sdk = holding_client(client, make_key, "tr-sameid")
    reviewer = reviewer_deciding(2, by_account)
    shared = [{**CALL, "id": "call_same"}, {**ACME, "id": "call_same"}, {**BETA, "id": "call_same"}]
    answer = sdk.chat.completions.create(model=MOCK_A, messages=ASK, extra_body={"mock_tool_calls": shared})
    reviewer.join()
    kept = [(c.function.name, json.loads(c.function.arguments)) for c in answer.choices[0].message.tool_calls]
    assert kept == [("lookup_weather", {"city": "Paris"}), ("delete_account", {"account": "beta"})]
    assert answer.choices[0].finish_reason == "tool_calls"


def test_a_legacy_function_call_is_passed_through_and_held_like_a_tool_call(client, make_key, mock):
    sdk = holding_client(client, make_key, "tr-legacy")
    reviewer = reviewer_deciding(1, lambda e: ("modified", {"arguments": {"account": "acme", "soft": True}}))
    answer = sdk.chat.completions.create(
        model=MOCK_A, messages=ASK, functions=FUNCTIONS, extra_body={"mock_tool_calls": [ACME]}
    )
    reviewer.join()
    [escalation] = Escalation.objects.filter(agent__name="tr-legacy")
    assert (escalation.operation, escalation.arguments) == ("delete_account", {"account": "acme"})
    choice = answer.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    assert json.loads(choice.message.function_call.arguments) == {"account": "acme", "soft": True}


# --- streamed answers -----------------------------------------------------------------------------------


def test_a_streamed_tool_call_is_held_even_when_the_request_listed_no_tools(client, make_key, mock):
    sdk = holding_client(client, make_key, "tr-notools")
    reviewer = reviewer_deciding(1, lambda e: ("rejected", {"comment": "never"}))
    text, calls, _, finishes = streamed(sdk, extra_body={"mock_tool_calls": [RISKY]})
    reviewer.join()
    assert calls == {} and finishes == ["stop"]
    assert "`delete_account` was rejected by a reviewer: never" in text


def test_a_streamed_function_call_is_held_until_decided(client, make_key, mock):
    sdk = holding_client(client, make_key, "tr-legacy-stream")
    reviewer = reviewer_deciding(1, lambda e: ("rejected", {"comment": "no deletions"}))
    text, calls, legacy, finishes = streamed(sdk, functions=FUNCTIONS, extra_body={"mock_tool_calls": [ACME]})
    reviewer.join()
    assert legacy == [] and calls == {} and finishes == ["stop"]
    assert "`delete_account` was rejected by a reviewer: no deletions" in text


def test_an_approved_streamed_function_call_arrives_whole_after_review(client, make_key, mock):
    sdk = holding_client(client, make_key, "tr-legacy-ok")
    reviewer = reviewer_deciding(1, lambda e: ("approved", {}))
    _, _, legacy, finishes = streamed(sdk, functions=FUNCTIONS, extra_body={"mock_tool_calls": [ACME]})
    reviewer.join()
    assert legacy[0]["name"] == "delete_account" and finishes == ["function_call"]
    assert json.loads("".join(piece["arguments"] or "" for piece in legacy)) == {"account": "acme"}


def test_streamed_calls_without_ids_are_decided_by_position(client, make_key, mock):
    sdk = holding_client(client, make_key, "tr-noid-stream")
    reviewer = reviewer_deciding(2, by_account)
    pieces = [{**ACME, "id": None}, {**BETA, "id": None}]
    text, calls, _, finishes = streamed(sdk, tools=TOOLS_FOR_RISKY, extra_body={"mock_tool_calls": pieces})
    reviewer.join()
    assert [json.loads(call["arguments"]) for call in calls.values()] == [{"account": "beta"}]
    assert "`delete_account` was rejected by a reviewer: not acme" in text and finishes == ["tool_calls"]


# --- a client that leaves while its answer is held ------------------------------------------------------


def test_a_client_that_leaves_a_hold_closes_its_escalation(client, make_key, mock):
    """The waiter is gone (its own timeout, 1 s, is far below the hold's 20 s): nobody will act on a decision,
    so the escalation is closed within a few seconds, naming the gateway and the disconnect."""
    sdk = holding_client(client, make_key, "tr-leaves")
    with pytest.raises(openai.APITimeoutError):
        sdk.with_options(timeout=1).chat.completions.create(
            model=MOCK_A, messages=ASK, extra_body={"mock_tool_calls": [RISKY]}
        )
    escalation = wait_for(
        lambda: Escalation.objects.filter(agent__name="tr-leaves", state="expired").first(),
        timeout=10,
        message="the escalation closed after the client left",
    )
    [event] = AuditEvent.objects.filter(escalation=escalation, event=review.WAITER_GAVE_UP)
    assert (event.data["channel"], event.data["why"]) == ("gateway", "the client disconnected")
    assert event.data["waited_seconds"] < 10
