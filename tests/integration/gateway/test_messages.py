"""``/v1/messages`` and ``/v1/messages/count_tokens`` through the real uvicorn server with the unmodified
``anthropic`` SDK as the client. Two upstreams, both the fault-injecting mock over real HTTP: the "mock"
provider (OpenAI-compatible: the request is translated to chat completions and the answer back) and the
"claude" provider (kind ``anthropic``: the native path through the ``anthropic`` SDK, the client's body sent
as it came). Each test asserts content, usage, the ledger row and the guard's headers."""

from __future__ import annotations

import base64
import io
import json
import threading

import anthropic
import httpx
import pytest
from PIL import Image

from agentops.config.models import ModelRoute, Provider
from agentops.config.source import bump_version, config_source
from agentops.demo.mock_usage import count_tokens
from agentops.runs.models import Agent
from budgets.actions import budgets as budget_actions
from budgets.models import Budget, Reservation
from review import actions as review
from review.models import Escalation
from tests.fixtures.people import ALICE
from tests.fixtures.waiting import wait_for
from tests.integration.gateway.conftest import MOCK_A
from tests.integration.gateway.test_gateway import RISKY, settled

pytestmark = pytest.mark.django_db(transaction=True)

CLAUDE = "claude-3-5-sonnet-20241022"  # served natively by the "claude" provider (the mock's Anthropic side)
CLAUDE_ALIAS = "claude-3-5-sonnet-latest"  # answers as its dated snapshot, like the real API
ASK = [{"role": "user", "content": "What is the capital of France?"}]
ANSWER = "Mock answer to: What is the capital of France?"
WEATHER = {"name": "lookup_weather", "description": "Weather of a city", "input_schema": {"type": "object"}}
DELETE = {"name": RISKY["name"], "input_schema": {"type": "object"}}


@pytest.fixture
def root(gateway, mock) -> str:
    """The gateway's root URL (the anthropic SDK adds ``/v1/messages``), with a "claude" provider of kind
    ``anthropic`` pointing at the mock and serving CLAUDE and CLAUDE_ALIAS, and a route "claude-route" whose
    primary is CLAUDE and backup MOCK_A."""
    claude, _ = Provider.objects.update_or_create(
        name="claude",
        defaults={
            "kind": "anthropic",
            "base_url": mock.root_url,
            "api_key": "sk-ant-test",
            "served_models": f"{CLAUDE}, {CLAUDE_ALIAS}",
        },
    )
    ModelRoute.objects.update_or_create(
        operation="claude-route",
        defaults={
            "primary_provider": claude,
            "primary_model": CLAUDE,
            "backup_provider": Provider.objects.get(name="mock"),
            "backup_model": MOCK_A,
            "use_rules": False,
            "use_human": False,
        },
    )
    bump_version()
    config_source().invalidate()
    return gateway.removesuffix("/v1")


@pytest.fixture
def sdk(root, make_key):
    """``sdk(agent, **kwargs)``: an ``anthropic.Anthropic`` for a new key of ``agent`` (this SDK sends an
    ``api_key`` as a bearer token; Claude Code and older SDKs send ``x-api-key``, see ``sse``)."""

    def make(agent: str = "msg-agent", **kwargs) -> anthropic.Anthropic:
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("api_key", make_key(agent))
        return anthropic.Anthropic(base_url=root, **kwargs)

    return make


def guard_headers(raw) -> dict[str, str]:
    return {name: raw.headers[name] for name in ("x-agentops-cache", "x-agentops-handler", "x-agentops-model")}


# --- answers ---------------------------------------------------------------------------------------------


def test_a_message_translated_to_chat_completions_comes_back_as_a_message_with_the_guards_headers(sdk, mock):
    raw = sdk("msg-text").messages.with_raw_response.create(
        model=MOCK_A, max_tokens=50, system="Answer briefly.", messages=ASK, metadata={"user_id": "u-9"}
    )
    message = raw.parse()
    assert [block.text for block in message.content] == ["Mock answer to: What is the capital of France?"]
    assert (message.role, message.stop_reason, message.model) == ("assistant", "end_turn", MOCK_A)
    assert guard_headers(raw) == {
        "x-agentops-cache": "bypass",
        "x-agentops-handler": "primary",
        "x-agentops-model": MOCK_A,
    }
    assert float(raw.headers["x-agentops-overhead-ms"]) >= 0 and raw.headers["x-agentops-request-id"]
    sent = mock.stats()["last_request"]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"] == [{"role": "system", "content": "Answer briefly."}, *ASK]
    assert (sent["body"]["max_tokens"], sent["body"]["user"]) == (50, "u-9")
    [row] = wait_for(settled("msg-text", 1))
    assert (row.model, row.session_id, row.operation) == (MOCK_A, "u-9", "chat")
    assert (row.input_tokens, row.output_tokens) == (message.usage.input_tokens, message.usage.output_tokens)
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == count_tokens(ANSWER, MOCK_A)


def test_the_native_provider_gets_the_clients_body_and_headers_and_its_cache_usage_reaches_the_ledger(sdk, mock):
    passed = {"anthropic-beta": "prompt-caching-2024-07-31", "anthropic-version": "2023-06-01"}
    client = sdk("msg-native", default_headers=passed)
    system = [{"type": "text", "text": "You are a geography tutor. " * 20, "cache_control": {"type": "ephemeral"}}]
    first = client.messages.create(
        model=CLAUDE_ALIAS, max_tokens=60, system=system, messages=ASK, extra_body={"top_k": 5}
    )
    sent = mock.stats()["last_request"]
    assert sent["path"] == "/v1/messages"
    assert sent["body"]["system"] == system and sent["body"]["top_k"] == 5 and sent["body"]["max_tokens"] == 60
    assert sent["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert (
        sent["headers"]["anthropic-version"] == "2023-06-01"
        and sent["headers"]["authorization"] == "Bearer sk-ant-test"
    )
    raw = client.messages.with_raw_response.create(model=CLAUDE_ALIAS, max_tokens=60, system=system, messages=ASK)
    second = raw.parse()
    assert first.model == second.model == "claude-3-5-sonnet-20241022"
    assert first.id.startswith("msg_mock") and first.content[0].text == "Mock answer to: What is the capital of France?"
    written, read = first.usage.cache_creation_input_tokens, second.usage.cache_read_input_tokens
    assert written > 100 and read == written and second.usage.cache_creation_input_tokens == 0
    assert raw.headers["x-agentops-handler"] == "primary" and raw.headers["x-agentops-model"] == second.model
    rows = sorted(wait_for(settled("msg-native", 2)), key=lambda row: row.cached_tokens)  # settles in any order
    assert rows[0].input_tokens == first.usage.input_tokens + written and rows[0].cached_tokens == 0
    assert rows[1].input_tokens == second.usage.input_tokens + read and rows[1].cached_tokens == read
    assert rows[1].output_tokens == second.usage.output_tokens and rows[1].model == second.model


def test_a_stop_sequence_and_the_output_cap_are_anthropics_stop_reasons(sdk):
    client = sdk("msg-stops")
    stopped = client.messages.create(model=CLAUDE, max_tokens=50, messages=ASK, stop_sequences=["capital"])
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "capital")
    assert stopped.content[0].text == "Mock answer to: What is the "
    capped = client.messages.create(model=MOCK_A, max_tokens=3, messages=ASK)
    assert capped.stop_reason == "max_tokens" and capped.usage.output_tokens == 3
    rows = wait_for(settled("msg-stops", 2))
    assert sorted(row.output_tokens for row in rows) == sorted([stopped.usage.output_tokens, 3])


def png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_images_base64_and_url_are_sent_and_counted_by_anthropics_rule(sdk, mock):
    client = sdk("msg-image")
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(300, 250)}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is in these pictures?"},
    ]
    counted = client.messages.count_tokens(model=CLAUDE, messages=[{"role": "user", "content": content}])
    # 300 × 250 / 750 = 100 tokens, a link at the rule's worst case (1600), and the text as its UTF-8 bytes
    assert counted.input_tokens >= 100 + 1600 + len("What is in these pictures?")
    message = client.messages.create(model=CLAUDE, max_tokens=40, messages=[{"role": "user", "content": content}])
    assert message.content[0].text == "Mock answer to: What is in these pictures?"
    assert mock.stats()["last_request"]["body"]["messages"][0]["content"] == content
    [row] = wait_for(settled("msg-image", 1))
    assert row.input_tokens == message.usage.input_tokens and row.input_tokens >= 100


def test_an_image_for_a_model_without_an_image_rule_is_refused_before_anything_is_reserved(sdk, mock):
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(10, 10)}}]
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk("msg-noimage").messages.create(model=MOCK_A, max_tokens=20, messages=[{"role": "user", "content": content}])
    assert refused.value.body["error"]["type"] == "invalid_request_error" and "image" in refused.value.message
    assert mock.stats()["requests"] == 0 and not Reservation.objects.filter(agent="msg-noimage").exists()


# --- tools -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [MOCK_A, CLAUDE])
def test_a_tool_round_trip_with_tool_use_and_tool_result(sdk, mock, model):
    client = sdk(f"msg-tools-{model[:6]}")
    first = client.messages.create(
        model=model,
        max_tokens=100,
        tools=[WEATHER],
        messages=ASK,
        extra_body={"mock_tool_calls": [{"name": "lookup_weather", "arguments": {"city": "Paris"}}]},
    )
    [call] = first.content
    assert (call.type, call.name, call.input, first.stop_reason) == (
        "tool_use",
        "lookup_weather",
        {"city": "Paris"},
        "tool_use",
    )
    history = [
        *ASK,
        {"role": "assistant", "content": [call.model_dump(include={"type", "id", "name", "input"})]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"},
                                     {"type": "text", "text": "And now?"}]},
    ]  # fmt: skip
    second = client.messages.create(model=model, max_tokens=100, tools=[WEATHER], messages=history)
    assert second.content[0].text == "Mock answer to: And now?" and second.stop_reason == "end_turn"
    sent = mock.stats()["last_request"]["body"]
    if model == MOCK_A:  # translated: the call and its result as chat completions has them
        assert sent["messages"][1]["tool_calls"][0]["function"] == {
            "name": "lookup_weather",
            "arguments": '{"city":"Paris"}',
        }
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}
        assert sent["tools"] == [{"type": "function", "function": {"name": "lookup_weather", "parameters": {"type": "object"},
                                                                   "description": "Weather of a city"}}]  # fmt: skip
    else:  # native: as the client sent it
        assert sent["messages"] == history and sent["tools"] == [WEATHER]
    rows = wait_for(settled(f"msg-tools-{model[:6]}", 2))
    assert sorted((r.input_tokens, r.output_tokens) for r in rows) == sorted(  # settles may finish in any order
        [(first.usage.input_tokens, first.usage.output_tokens), (second.usage.input_tokens, second.usage.output_tokens)]
    )


def decide_when_pending(decision: str, **kwargs) -> threading.Thread:
    def work() -> None:
        pending = Escalation.objects.filter(operation=RISKY["name"], state="pending")
        escalation = wait_for(pending.first, timeout=15, interval=0.05, message="the escalation")
        review.claim(escalation.pk, ALICE.user())
        review.decide(escalation.pk, ALICE.user(), decision, **kwargs)

    thread = threading.Thread(target=work)
    thread.start()
    return thread


@pytest.mark.parametrize("model", [MOCK_A, CLAUDE])
def test_a_risky_tool_use_is_held_until_a_reviewer_modifies_it(sdk, mock, model):
    agent = f"msg-hold-{model[:6]}"
    client = sdk(agent, timeout=30)
    Agent.objects.filter(name=agent).update(gateway_tool_review="hold")
    reviewer = decide_when_pending("modified", arguments={"account": "acme", "hard": False}, comment="soft only")
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=100, tools=[WEATHER, DELETE], messages=ASK, extra_body={"mock_tool_calls": [RISKY]}
    )
    reviewer.join()
    message = raw.parse()
    [call] = message.content
    assert (call.name, call.input, message.stop_reason) == (
        RISKY["name"],
        {"account": "acme", "hard": False},
        "tool_use",
    )
    escalation = Escalation.objects.get(operation=RISKY["name"])
    assert raw.headers["x-agentops-escalations"] == str(escalation.pk) and escalation.state == "decided"
    [row] = wait_for(settled(agent, 1))
    assert row.output_tokens == message.usage.output_tokens


def test_a_risky_tool_use_rejected_in_a_stream_is_replaced_by_the_reviewers_reason(sdk, mock):
    client = sdk("msg-hold-stream", timeout=30)
    Agent.objects.filter(name="msg-hold-stream").update(gateway_tool_review="hold")
    reviewer = decide_when_pending("rejected", comment="never")
    calls = [{"name": "lookup_weather", "arguments": {"city": "Paris"}}, RISKY]
    with client.messages.stream(
        model=CLAUDE, max_tokens=100, tools=[WEATHER, DELETE], messages=ASK, extra_body={"mock_tool_calls": calls}
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    reviewer.join()
    assert [block.type for block in final.content] == ["text", "tool_use"]
    assert final.content[0].text == "The call to `delete_account` was rejected by a reviewer: never"
    assert (final.content[1].name, final.content[1].input) == ("lookup_weather", {"city": "Paris"})
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    [row] = wait_for(settled("msg-hold-stream", 1))
    assert final.usage.output_tokens == row.output_tokens and final.usage.input_tokens == row.input_tokens


# --- streams ---------------------------------------------------------------------------------------------


def sse(root: str, key: str, body: dict) -> tuple[httpx.Response, list[tuple[str, dict]]]:
    with httpx.stream("POST", f"{root}/v1/messages", json=body, headers={"x-api-key": key}, timeout=30) as response:
        lines = [line for line in response.iter_lines() if line]
    events = [(lines[i][7:], json.loads(lines[i + 1][6:])) for i in range(0, len(lines), 2)]
    return response, events


@pytest.mark.parametrize("model", [MOCK_A, CLAUDE])
def test_a_stream_has_anthropics_events_in_order_and_its_final_usage_is_the_ledgers(root, make_key, model):
    agent = f"msg-stream-{model[:6]}"
    body = {"model": model, "max_tokens": 100, "messages": ASK, "stream": True}
    response, events = sse(root, make_key(agent), body)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-agentops-handler"] == "primary"
    kinds = [kind for kind, _ in events]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-4:] == ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert all(kind == data["type"] for kind, data in events)
    text = "".join(data["delta"]["text"] for kind, data in events if kind == "content_block_delta")
    assert text == "Mock answer to: What is the capital of France?"
    end = events[-2][1]
    assert end["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    [row] = wait_for(settled(agent, 1))
    assert end["usage"]["output_tokens"] == row.output_tokens == count_tokens(ANSWER, model)
    start_usage = events[0][1]["message"]["usage"]
    assert end["usage"].get("input_tokens", start_usage["input_tokens"]) == row.input_tokens


def test_the_sdks_stream_gives_the_text_and_the_final_usage(sdk):
    with sdk("msg-sdk-stream").messages.stream(model=MOCK_A, max_tokens=100, system="Be brief.", messages=ASK) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == final.content[0].text == "Mock answer to: What is the capital of France?"
    [row] = wait_for(settled("msg-sdk-stream", 1))
    assert (final.usage.input_tokens, final.usage.output_tokens) == (row.input_tokens, row.output_tokens)
    assert final.stop_reason == "end_turn"


# --- count_tokens, keys, errors --------------------------------------------------------------------------


def test_count_tokens_is_the_bound_the_reservation_holds(sdk):
    budget_actions.save_budget(Budget(name="msg-global", scope="global", limit_tokens=10_000_000, timezone="UTC"))
    client = sdk("msg-count")
    kwargs = {"model": MOCK_A, "system": "Be brief.", "tools": [WEATHER], "messages": ASK}
    counted = client.messages.count_tokens(**kwargs)
    message = client.messages.create(max_tokens=77, **kwargs)
    wait_for(settled("msg-count", 1))
    [held] = Reservation.objects.filter(agent="msg-count")
    assert held.tokens == counted.input_tokens + 77
    assert counted.input_tokens >= message.usage.input_tokens > 0


def test_x_api_key_and_a_bearer_token_both_name_the_agent_and_a_wrong_key_is_an_authentication_error(root, make_key):
    by_header = httpx.post(
        f"{root}/v1/messages",
        json={"model": MOCK_A, "max_tokens": 20, "messages": ASK},
        headers={"x-api-key": make_key("msg-x-api-key"), "anthropic-version": "2023-06-01"},
        timeout=10,
    )
    assert by_header.status_code == 200 and by_header.json()["content"][0]["text"] == ANSWER
    assert by_header.headers["x-agentops-handler"] == "primary"
    bearer = anthropic.Anthropic(base_url=root, auth_token=make_key("msg-bearer"), max_retries=0)
    message = bearer.messages.create(model=MOCK_A, max_tokens=20, messages=ASK)
    assert message.content[0].text == ANSWER
    [row] = wait_for(settled("msg-bearer", 1))
    assert row.output_tokens == message.usage.output_tokens
    [row] = wait_for(settled("msg-x-api-key", 1))
    assert row.output_tokens == by_header.json()["usage"]["output_tokens"]
    wrong = anthropic.Anthropic(base_url=root, api_key="ao_not-a-real-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        wrong.messages.create(model=MOCK_A, max_tokens=20, messages=ASK)
    assert refused.value.status_code == 401 and refused.value.body["type"] == "error"
    assert refused.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.count_tokens(model=MOCK_A, messages=ASK)
    response = httpx.post(f"{root}/v1/messages", json={}, headers={"x-api-key": "ao_wrong"}, timeout=10)
    assert (response.status_code, response.json()["error"]["type"]) == (401, "authentication_error")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model": MOCK_A, "messages": ASK}, "max_tokens: Field required"),
        ({"model": MOCK_A, "max_tokens": 10, "messages": []}, "messages: at least one message"),
        ({"model": MOCK_A, "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"model": MOCK_A, "max_tokens": 10, "messages": ASK, "temperature": 3}, "temperature"),
        ({"model": MOCK_A, "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "image"}]}]},
         "messages.0.content.0.source"),
        ({"model": MOCK_A, "max_tokens": 10, "messages": [{"role": "user", "content": "x\u0000"}]}, "messages"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_invalid_request_error_and_nothing_goes_upstream(root, make_key, mock, body, says):
    response = httpx.post(f"{root}/v1/messages", json=body, headers={"x-api-key": make_key("msg-bad")}, timeout=10)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert says in error["error"]["message"]
    assert mock.stats()["requests"] == 0


def test_not_json_and_an_upstreams_404_are_anthropic_errors(sdk, root, make_key, mock):
    mock.script("no-such-model", ["404"])  # the default upstream does not know it: its 404 passes through
    response = httpx.post(f"{root}/v1/messages", content=b"{nope", headers={"x-api-key": make_key("msg-json")})
    assert (response.status_code, response.json()["error"]["type"]) == (400, "invalid_request_error")
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk("msg-404").messages.create(model="no-such-model", max_tokens=10, messages=ASK)
    assert missing.value.body["error"]["type"] == "not_found_error" and "does not exist" in missing.value.message
    response = httpx.get(f"{root}/v1/messages", headers={"x-api-key": make_key("msg-get")})
    assert (response.status_code, response.json()["error"]["type"]) == (405, "invalid_request_error")


def test_a_failing_native_upstream_is_retried_then_falls_back_to_the_routes_backup(sdk, mock):
    mock.script(CLAUDE, ["529", "529", "529"])  # more than the retries: the route's backup (MOCK_A) answers
    raw = sdk("msg-fallback").messages.with_raw_response.create(model="claude-route", max_tokens=30, messages=ASK)
    message = raw.parse()
    assert raw.headers["x-agentops-handler"] == "backup" and message.model == MOCK_A
    assert message.content[0].text == "Mock answer to: What is the capital of France?"
    assert mock.stats()["by_model_fault"][CLAUDE] == {"529": 3}
    [row] = wait_for(settled("msg-fallback", 1))
    assert (row.model, row.output_tokens) == (MOCK_A, message.usage.output_tokens)


def test_a_spent_budget_is_a_rate_limit_error_the_sdk_does_not_retry(sdk, mock):
    budget_actions.save_budget(
        Budget(name="msg-tiny", scope="agent", scope_key="msg-broke", limit_tokens=10, timezone="UTC")
    )
    with pytest.raises(anthropic.RateLimitError) as refused:
        sdk("msg-broke", max_retries=2).messages.create(model=MOCK_A, max_tokens=50, messages=ASK)
    assert refused.value.body["error"]["type"] == "rate_limit_error" and "msg-tiny" in refused.value.message
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert mock.stats()["requests"] == 0


def test_a_chat_completions_client_naming_a_claude_model_is_answered_by_the_native_provider(root, client, mock):
    """The other direction: an OpenAI client on /v1/chat/completions, a model on the Anthropic provider; the
    request reaches the mock's /v1/messages translated (system, max_tokens, tools) and the answer comes back
    as a chat completion, streamed or not, with the cache reads as cached tokens."""
    sdk = client()
    asked = [{"role": "system", "content": "Be brief."}, *ASK]
    tools = [{"type": "function", "function": {"name": "lookup_weather", "parameters": {"type": "object"}}}]
    answer = sdk.chat.completions.create(model=CLAUDE, messages=asked, max_tokens=40, tools=tools)
    sent = mock.stats()["last_request"]
    assert sent["path"] == "/v1/messages" and sent["body"]["system"] == "Be brief."
    assert sent["body"]["messages"] == [{"role": "user", "content": [{"type": "text", "text": ASK[0]["content"]}]}]
    assert sent["body"]["tools"] == [{"name": "lookup_weather", "input_schema": {"type": "object"}}]
    assert answer.choices[0].message.content == ANSWER and answer.choices[0].finish_reason == "stop"
    assert answer.model == CLAUDE and not hasattr(answer, "anthropic_message")
    chunks = list(sdk.chat.completions.create(model=CLAUDE, messages=ASK, max_tokens=40, stream=True,
                                              stream_options={"include_usage": True}))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens


def test_an_upstream_stream_that_breaks_after_its_start_ends_with_an_error_event_and_settles(root, make_key, mock):
    mock.script(CLAUDE, ["cut"])  # half the events, then the connection drops: no retry can repair a started stream
    body = {"model": CLAUDE, "max_tokens": 100, "messages": ASK, "stream": True}
    response, events = sse(root, make_key("msg-cut"), body)
    assert response.status_code == 200 and events[0][0] == "message_start"
    kind, data = events[-1]
    assert kind == "error" and data["error"]["type"] == "overloaded_error"
    assert "The upstream stream failed" in data["error"]["message"]
    [row] = wait_for(settled("msg-cut", 1))
    assert row.model == CLAUDE and row.input_tokens > 0


def test_a_body_over_the_limit_is_a_413_in_anthropics_shape(root, make_key, mock):
    big = {"model": MOCK_A, "max_tokens": 10, "messages": [{"role": "user", "content": "x" * (1024 * 1024 + 10)}]}
    response = httpx.post(f"{root}/v1/messages", json=big, headers={"x-api-key": make_key("msg-big")}, timeout=10)
    assert response.status_code == 413
    assert response.json() == {
        "type": "error",
        "error": {"type": "request_too_large", "message": "The request body is over the limit of 1048576 bytes."},
    }
    assert mock.stats()["requests"] == 0


# --- the human in the gateway ----------------------------------------------------------------------------


def test_a_budget_block_held_for_the_human_is_approved_then_taken_over_in_anthropics_shape(sdk, mock):
    """``gateway_human = hold``: a budget set to escalate holds the call for a reviewer; approved, it goes
    ahead once (no reservation, one ledger row); taken over, the reviewer's text is the message."""
    client = sdk("msg-held")
    Agent.objects.filter(name="msg-held").update(gateway_human="hold")
    budget_actions.save_budget(
        Budget(
            name="msg-held-tiny",
            scope="agent",
            scope_key="msg-held",
            limit_tokens=10,
            timezone="UTC",
            on_block="escalate",
        )
    )
    reviewer = decide_in_turn([("approved", {}), ("taken_over", {"result": "Paris, says a reviewer."})])
    raw = client.messages.with_raw_response.create(model=MOCK_A, max_tokens=50, messages=ASK)
    message = raw.parse()
    assert [block.text for block in message.content] == [ANSWER] and message.usage.output_tokens > 0
    first = Escalation.objects.filter(agent__name="msg-held").order_by("id").first()
    assert (first.reason, first.source, first.decision) == ("budget_exceeded", "gateway", "approved")
    assert first.context["endpoint"] == "/v1/messages"  # what the approval screen says the agent called
    assert raw.headers["x-agentops-escalations"] == str(first.pk) and raw.headers["x-agentops-handler"] == "primary"
    [row] = wait_for(settled("msg-held", 1))
    assert row.reservation_id is None and row.output_tokens == message.usage.output_tokens

    events = list(client.messages.create(model=MOCK_A, max_tokens=50, messages=ASK, stream=True))
    reviewer.join()
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == "Paris, says a reviewer." and events[-1].type == "message_stop"
    rows = wait_for(settled("msg-held", 2))
    assert sorted((r.model, r.output_tokens) for r in rows)[0] == ("human", 0)
    assert mock.stats()["by_model"][MOCK_A] == 1  # only the approved call went upstream


def test_a_rejected_hold_is_anthropics_rate_limit_error(sdk, mock):
    client = sdk("msg-held-no")
    Agent.objects.filter(name="msg-held-no").update(gateway_human="hold")
    budget_actions.save_budget(
        Budget(
            name="msg-no-tiny",
            scope="agent",
            scope_key="msg-held-no",
            limit_tokens=10,
            timezone="UTC",
            on_block="escalate",
        )
    )
    reviewer = decide_in_turn([("rejected", {"comment": "not today"})])
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(model=MOCK_A, max_tokens=50, messages=ASK)
    reviewer.join()
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    assert "msg-no-tiny" in refused.value.message and "A reviewer rejected it: not today" in refused.value.message
    assert mock.stats()["requests"] == 0


def decide_in_turn(decisions: list[tuple[str, dict]]) -> threading.Thread:
    """A reviewer deciding each next pending escalation with the next of ``decisions``."""

    def work() -> None:
        for decision, kwargs in decisions:
            [escalation] = wait_for(lambda: list(Escalation.objects.filter(state="pending")) or None, timeout=15)
            review.claim(escalation.pk, ALICE.user())
            review.decide(escalation.pk, ALICE.user(), decision, **kwargs)

    thread = threading.Thread(target=work)
    thread.start()
    return thread
