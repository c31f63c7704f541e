"""``/v1/responses`` (OpenAI's Responses API) through the real uvicorn gateway, with the unmodified ``openai``
SDK as the client and the fault-injecting mock as the upstream: translated to chat completions by default,
passed natively to a provider marked as speaking Responses. Every answer is checked for its content, its
usage, its ledger row and the guard's headers; held tool calls are decided by a reviewer in the test process
(review.actions), stored responses are read back, chained and kept per agent."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import httpx
import openai
import pytest
from django.utils import timezone

from agentops.config.models import Provider
from agentops.config.source import bump_version, config_source
from agentops.gateway.actions.responses import save_response
from agentops.gateway.models import StoredResponse
from agentops.gateway.tasks import purge_responses
from agentops.runs.models import Agent
from budgets.actions import budgets as budget_actions
from budgets.models import Budget
from review import actions as review
from review.models import Escalation
from tests.fixtures.people import ALICE
from tests.fixtures.waiting import wait_for
from tests.integration.gateway.conftest import MOCK_A, UPSTREAM_ONLY
from tests.integration.gateway.test_gateway import CALL, RISKY, settled

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "What is the capital of France?"
ANSWER = f"Mock answer to: {QUESTION}"
WEATHER = {"type": "function", "name": "lookup_weather", "parameters": {"type": "object", "properties": {}}}
DELETE = {"type": "function", "name": "delete_account", "parameters": {"type": "object", "properties": {}}}
NATIVE_MODEL = "mock-native"


def assert_guarded(headers, cache: str = "bypass") -> None:
    assert headers["x-agentops-cache"] == cache and headers["x-agentops-handler"] in ("primary", "cache")
    assert float(headers["x-agentops-overhead-ms"]) >= 0 and headers["x-agentops-request-id"]


def assert_ledger_matches(row, response, model: str) -> None:
    assert (row.model, row.source) == (model, "gateway")
    assert (row.input_tokens, row.output_tokens) == (response.usage.input_tokens, response.usage.output_tokens)
    assert row.cost_usd >= 0 and row.input_tokens > 0 and row.output_tokens > 0


# --- answers -------------------------------------------------------------------------------------------


def test_text_with_instructions_is_translated_to_a_chat_completion_and_back(client, make_key, mock):
    sdk = client(make_key("rs-text"))
    raw = sdk.responses.with_raw_response.create(
        model=UPSTREAM_ONLY, input=QUESTION, instructions="Answer briefly.", max_output_tokens=50, user="u-1"
    )
    response = raw.parse()
    assert response.output_text == ANSWER and response.status == "completed"
    assert response.id.startswith("resp_") and response.output[0].type == "message"
    assert response.instructions == "Answer briefly." and response.max_output_tokens == 50
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert_guarded(raw.headers)
    sent = mock.stats()["last_request"]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
    ]
    assert sent["body"]["max_tokens"] == 50 and sent["body"]["user"] == "u-1"
    [row] = wait_for(settled("rs-text", 1))
    assert_ledger_matches(row, response, UPSTREAM_ONLY)
    assert row.session_id == "u-1"


def test_items_input_carries_the_conversation_and_a_cut_answer_is_incomplete(client, make_key, mock):
    sdk = client(make_key("rs-items"))
    items = [
        {"role": "developer", "content": "Be terse."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
        {"role": "user", "content": "Tell me about Paris in detail."},
    ]
    response = sdk.responses.create(model=MOCK_A, input=items, max_output_tokens=3)
    assert mock.stats()["last_request"]["body"]["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me about Paris in detail."},
    ]
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text.startswith("Mock answer") and response.usage.output_tokens == 3
    [row] = wait_for(settled("rs-items", 1))
    assert_ledger_matches(row, response, MOCK_A)


def test_a_function_tool_round_trip_with_function_call_output(client, make_key, mock):
    sdk = client(make_key("rs-tools"))
    first = sdk.responses.create(
        model=MOCK_A, input=QUESTION, tools=[WEATHER], tool_choice="auto", extra_body={"mock_tool_calls": [CALL]}
    )
    [call] = first.output
    assert (call.type, call.name, json.loads(call.arguments)) == ("function_call", "lookup_weather", {"city": "Paris"})
    sent = mock.stats()["last_request"]["body"]
    assert sent["tools"] == [{"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}]
    assert sent["tool_choice"] == "auto"
    follow_up = [
        {"role": "user", "content": QUESTION},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 °C"},
    ]
    second = sdk.responses.create(
        model=MOCK_A, input=follow_up, tools=[WEATHER], extra_body={"mock_content": "Sunny, 21 degrees."}
    )
    assert second.output_text == "Sunny, 21 degrees."
    messages = mock.stats()["last_request"]["body"]["messages"]
    assert messages[1]["tool_calls"][0]["id"] == call.call_id and messages[1]["role"] == "assistant"
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21 °C"}
    rows = wait_for(settled("rs-tools", 2))
    assert_ledger_matches(rows[0], first, MOCK_A)
    assert_ledger_matches(rows[1], second, MOCK_A)


def test_previous_response_id_continues_the_stored_conversation(client, make_key, mock):
    sdk = client(make_key("rs-chain"))
    first = sdk.responses.create(model=MOCK_A, input="My name is Ada.", metadata={"ticket": "T-1"})
    second = sdk.responses.create(model=MOCK_A, input="What is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert mock.stats()["last_request"]["body"]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "My name is Ada."}]},
        {"role": "assistant", "content": "Mock answer to: My name is Ada."},
        {"role": "user", "content": [{"type": "text", "text": "What is my name?"}]},
    ]
    third = sdk.responses.create(model=MOCK_A, input="And again?", previous_response_id=second.id)
    assert len(mock.stats()["last_request"]["body"]["messages"]) == 5 and third.output_text
    kept = sdk.responses.retrieve(first.id)
    assert kept.output_text == "Mock answer to: My name is Ada." and kept.metadata == {"ticket": "T-1"}
    assert kept.usage.input_tokens == first.usage.input_tokens
    rows = wait_for(settled("rs-chain", 3))
    assert rows[1].input_tokens == second.usage.input_tokens > rows[0].input_tokens  # the history was sent
    sdk.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(first.id)


def test_another_agents_response_is_as_missing_as_an_unknown_one(client, make_key, mock):
    mine = client(make_key("rs-owner"))
    theirs = client(make_key("rs-other"))
    stored = mine.responses.create(model=MOCK_A, input=QUESTION)
    unstored = mine.responses.create(model=MOCK_A, input=QUESTION, store=False)
    for sdk, response_id in ((theirs, stored.id), (mine, unstored.id), (mine, "resp_unknown")):
        with pytest.raises(openai.NotFoundError) as missing:
            sdk.responses.retrieve(response_id)
        assert missing.value.body["message"] == f"Response with id '{response_id}' not found."
    with pytest.raises(openai.NotFoundError) as chained:
        theirs.responses.create(model=MOCK_A, input="Go on.", previous_response_id=stored.id)
    assert chained.value.body["param"] == "previous_response_id"
    wait_for(settled("rs-owner", 2))
    assert not StoredResponse.objects.filter(agent__name="rs-other").exists()  # nothing charged nor kept for it
    assert mock.stats()["requests"] == 2


def test_a_deterministic_request_is_answered_from_the_cache_the_second_time(client, make_key, mock):
    sdk = client(make_key("rs-cache"))
    first = sdk.responses.with_raw_response.create(model=MOCK_A, input=QUESTION, temperature=0)
    again = sdk.responses.with_raw_response.create(model=MOCK_A, input=QUESTION, temperature=0)
    assert_guarded(first.headers, cache="miss")
    assert_guarded(again.headers, cache="hit")
    assert again.parse().output_text == first.parse().output_text == ANSWER
    assert again.parse().id != first.parse().id and mock.stats()["requests"] == 1
    rows = wait_for(settled("rs-cache", 2))
    assert rows[1].cached and rows[1].input_tokens == 0


# --- streams -------------------------------------------------------------------------------------------


def test_a_stream_sends_typed_events_in_order_and_ends_with_usage(client, make_key, mock):
    sdk = client(make_key("rs-stream"))
    with sdk.responses.stream(model=MOCK_A, input=QUESTION, instructions="Be brief.") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == ANSWER
    assert final.output_text == ANSWER and final.usage.output_tokens > 0 and final.status == "completed"
    [row] = wait_for(settled("rs-stream", 1))
    assert_ledger_matches(row, final, MOCK_A)
    assert sdk.responses.retrieve(final.id).output_text == ANSWER


def test_a_streamed_function_call_comes_as_argument_deltas_with_the_guards_headers(client, make_key, mock):
    sdk = client(make_key("rs-stream-tools"))
    with sdk.responses.with_streaming_response.create(
        model=MOCK_A, input=QUESTION, tools=[WEATHER], stream=True, extra_body={"mock_tool_calls": [CALL]}
    ) as raw:
        assert_guarded(raw.headers)
        events = list(raw.parse())
    kinds = [event.type for event in events]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert (done.name, json.loads(done.arguments)) == ("lookup_weather", {"city": "Paris"})
    pieces = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(pieces) == {"city": "Paris"}
    final = events[-1].response
    assert final.output[0].type == "function_call" and final.usage.input_tokens > 0
    [row] = wait_for(settled("rs-stream-tools", 1))
    assert_ledger_matches(row, final, MOCK_A)


def test_an_upstream_failure_after_the_stream_began_is_an_error_event_then_response_failed(client, make_key, mock):
    sdk = client(make_key("rs-stream-cut"))
    mock.script(MOCK_A, ["cut"])
    events = list(sdk.responses.create(model=MOCK_A, input=QUESTION, stream=True, extra_body={"mock_words": 40}))
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-2:] == ["error", "response.failed"]
    assert events[-1].response.status == "failed" and "upstream stream failed" in events[-2].message
    [row] = wait_for(settled("rs-stream-cut", 1))  # what was produced is charged
    assert row.output_tokens > 0


# --- tool review ---------------------------------------------------------------------------------------


def decide_when_pending(decision: str, **kwargs) -> threading.Thread:
    def work() -> None:
        pending = Escalation.objects.filter(operation=RISKY["name"], state="pending")
        escalation = wait_for(pending.first, timeout=15, interval=0.05, message="the escalation")
        review.claim(escalation.pk, ALICE.user())
        review.decide(escalation.pk, ALICE.user(), decision, **kwargs)

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_a_budget_block_held_for_the_human_is_approved_and_answered_as_a_response(client, make_key, mock):
    """``gateway_human = hold`` on /v1/responses: a budget set to escalate holds the call for a reviewer, the
    approval screen names the endpoint the agent called, and once approved the call goes ahead once."""
    key = make_key("rs-held")
    Agent.objects.filter(name="rs-held").update(gateway_human="hold")
    budget_actions.save_budget(
        Budget(name="rs-held-tiny", scope="agent", scope_key="rs-held", limit_tokens=10, on_block="escalate")
    )

    def approve() -> None:
        pending = Escalation.objects.filter(agent__name="rs-held", state="pending")
        escalation = wait_for(pending.first, timeout=15, interval=0.05, message="the held call's escalation")
        review.decide(escalation.pk, ALICE.user(), "approved")

    reviewer = threading.Thread(target=approve)
    reviewer.start()
    raw = client(key, timeout=30).responses.with_raw_response.create(model=MOCK_A, input=QUESTION, max_output_tokens=50)
    reviewer.join()
    response = raw.parse()
    assert response.output_text == ANSWER and response.status == "completed"
    escalation = Escalation.objects.get(agent__name="rs-held")
    assert (escalation.reason, escalation.decision) == ("budget_exceeded", "approved")
    assert escalation.context["endpoint"] == "/v1/responses"
    assert raw.headers["x-agentops-escalations"] == str(escalation.pk)
    [row] = wait_for(settled("rs-held", 1))
    assert row.reservation_id is None and row.output_tokens == response.usage.output_tokens


def test_a_held_risky_call_is_released_with_the_reviewers_arguments(client, make_key, mock):
    key = make_key("rs-hold")
    Agent.objects.filter(name="rs-hold").update(gateway_tool_review="hold")
    reviewer = decide_when_pending("modified", arguments={"account": "acme", "hard": False})
    raw = client(key, timeout=30).responses.with_raw_response.create(
        model=MOCK_A, input=QUESTION, tools=[WEATHER, DELETE], extra_body={"mock_tool_calls": [CALL, RISKY]}
    )
    reviewer.join()
    response = raw.parse()
    calls = {item.name: json.loads(item.arguments) for item in response.output}
    assert calls == {"lookup_weather": {"city": "Paris"}, "delete_account": {"account": "acme", "hard": False}}
    assert_guarded(raw.headers)
    assert raw.headers["x-agentops-review-url"].startswith("/review/")
    [row] = wait_for(settled("rs-hold", 1))
    assert_ledger_matches(row, response, MOCK_A)
    kept = StoredResponse.objects.get(id=response.id)  # what the reviewer decided is what continues
    assert json.loads(kept.items[-1]["arguments"]) == {"account": "acme", "hard": False}


def test_a_held_streamed_call_that_is_rejected_becomes_text(client, make_key, mock):
    key = make_key("rs-hold-stream")
    Agent.objects.filter(name="rs-hold-stream").update(gateway_tool_review="hold")
    reviewer = decide_when_pending("rejected", comment="never")
    with client(key, timeout=30).responses.stream(
        model=MOCK_A, input=QUESTION, tools=[DELETE], extra_body={"mock_tool_calls": [RISKY]}
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    reviewer.join()
    assert not any(e.type.startswith("response.function_call") for e in events)
    assert "`delete_account` was rejected by a reviewer: never" in final.output_text
    assert [item.type for item in final.output] == ["message"] and final.status == "completed"
    [row] = wait_for(settled("rs-hold-stream", 1))
    assert row.output_tokens == final.usage.output_tokens > 0


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MOCK_A}, "input"),
        ({"input": "hi"}, "model"),
        ({"model": MOCK_A, "input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"model": MOCK_A, "input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
        ({"model": MOCK_A, "input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": MOCK_A, "input": "hi", "max_output_tokens": "many"}, "max_output_tokens"),
        ({"model": MOCK_A, "input": "hi", "store": "yes"}, "store"),
        ({"model": MOCK_A, "input": "hi\u0000"}, "input"),
    ],
)
def test_bad_input_is_a_400_in_openais_shape_and_nothing_is_sent(client, make_key, mock, body, param):
    sdk = client(make_key("rs-bad"))
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.post("/responses", body=body, cast_to=httpx.Response)
    assert refused.value.status_code == 400 and refused.value.body["param"] == param
    assert refused.value.body["type"] == "invalid_request_error" and refused.value.body["message"]
    assert mock.stats()["requests"] == 0


def test_a_body_that_is_not_json_and_a_wrong_method_get_openai_shaped_4xx(gateway, make_key):
    headers = {"authorization": f"Bearer {make_key('rs-raw')}"}
    broken = httpx.post(f"{gateway}/responses", content=b"{nope", headers=headers)
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    wrong = httpx.put(f"{gateway}/responses", json={}, headers=headers)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    anonymous = httpx.get(f"{gateway}/responses/resp_x")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"


# --- a provider that speaks Responses ------------------------------------------------------------------


@pytest.fixture
def native(gateway, mock):
    Provider.objects.update_or_create(
        name="mock-responses",
        defaults={
            "kind": "openai",
            "base_url": mock.base_url,
            "api_key": "sk-test",
            "served_models": NATIVE_MODEL,
            "speaks_responses": True,
        },
    )
    bump_version()
    config_source().invalidate()
    return NATIVE_MODEL


def test_a_provider_that_speaks_responses_gets_the_body_natively(client, make_key, mock, native):
    sdk = client(make_key("rs-native"))
    first = sdk.responses.create(model=native, input="My name is Ada.", instructions="Be kind.", max_output_tokens=64)
    sent = mock.stats()["last_request"]
    assert sent["path"] == "/v1/responses"
    ada = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "My name is Ada."}]}
    assert sent["body"]["input"] == [ada] and sent["body"]["instructions"] == "Be kind."
    assert sent["body"]["store"] is False and sent["body"]["max_output_tokens"] == 64
    assert first.output[0].id.startswith("msg_mock")  # the provider's own items, passed on
    assert first.output_text == "Mock answer to: My name is Ada." and first.id.startswith("resp_")
    second = sdk.responses.create(model=native, input="Who am I?", previous_response_id=first.id)
    history = mock.stats()["last_request"]["body"]["input"]
    assert [item.get("role") for item in history] == ["user", "assistant", "user"]
    assert "id" not in history[1] and "previous_response_id" not in mock.stats()["last_request"]["body"]
    rows = wait_for(settled("rs-native", 2))
    assert_ledger_matches(rows[0], first, native)
    assert_ledger_matches(rows[1], second, native)


def test_a_native_stream_is_guarded_and_reviewed_like_a_translated_one(client, make_key, mock, native):
    sdk = client(make_key("rs-native-stream"))
    with sdk.responses.stream(
        model=native, input=QUESTION, tools=[WEATHER], extra_body={"mock_tool_calls": [CALL]}
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert mock.stats()["last_request"]["path"] == "/v1/responses"
    assert mock.stats()["last_request"]["body"]["stream"] is True
    [call] = final.output
    assert (call.name, json.loads(call.arguments)) == ("lookup_weather", {"city": "Paris"})
    assert events[-1].type == "response.completed" and final.usage.input_tokens > 0
    [row] = wait_for(settled("rs-native-stream", 1))
    assert_ledger_matches(row, final, native)


# --- retention -----------------------------------------------------------------------------------------


def test_expired_responses_are_not_found_and_beat_deletes_them(client, make_key):
    sdk = client(make_key("rs-expired"))
    agent = Agent.objects.get(name="rs-expired")
    save_response("resp_old", agent.pk, {"id": "resp_old"}, [])
    save_response("resp_new", agent.pk, {"id": "resp_new", "object": "response"}, [])
    StoredResponse.objects.filter(id="resp_old").update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve("resp_old")
    assert purge_responses() == 1
    assert list(StoredResponse.objects.filter(agent=agent).values_list("id", flat=True)) == ["resp_new"]
