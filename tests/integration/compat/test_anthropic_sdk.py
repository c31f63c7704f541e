"""The official ``anthropic`` SDK, unmodified, pointed at the gateway (issue 16, item 6): ``messages.create``,
``messages.stream``, a tool round trip with ``tool_use`` / ``tool_result`` blocks, and ``count_tokens`` —
skipped until the gateway serves ``/v1/messages``. Its ``base_url`` is the gateway's root: the SDK adds
``/v1/messages`` itself. It authenticates with ``x-api-key`` (the SDK's default). Upstream is the mock,
reached by translation to chat completions (no Anthropic provider is configured)."""

from __future__ import annotations

import anthropic
import pytest

from budgets.models import UsageRecord
from tests.integration.compat.conftest import assert_guarded, ledger_rows
from tests.integration.gateway.conftest import MOCK_A

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "What is the capital of France?"
ANSWER = f"Mock answer to: {QUESTION}"
ASK = [{"role": "user", "content": QUESTION}]
WEATHER_TOOL = {
    "name": "lookup_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
WEATHER_CALL = {"name": "lookup_weather", "arguments": {"city": "Paris"}}


@pytest.fixture
def messages_endpoint(endpoint) -> None:
    endpoint("/messages")


def recording(gateway: str, key: str) -> tuple[anthropic.Anthropic, list]:
    """An SDK client on the gateway (its root, without ``/v1``) and the headers of every answer it gets."""
    seen: list = []
    http = anthropic.DefaultHttpxClient(event_hooks={"response": [lambda response: seen.append(response.headers)]})
    sdk = anthropic.Anthropic(base_url=gateway.removesuffix("/v1"), api_key=key, max_retries=0, http_client=http)
    return sdk, seen


def assert_usage_matches(rows: list[UsageRecord], usages: list) -> None:
    assert [(r.model, r.input_tokens, r.output_tokens) for r in rows] == [
        (MOCK_A, u.input_tokens, u.output_tokens) for u in usages
    ]


def test_messages_create(gateway, make_key, messages_endpoint):
    sdk, seen = recording(gateway, make_key("compat-an-create"))
    message = sdk.messages.create(model=MOCK_A, max_tokens=100, system="Answer briefly.", messages=ASK)
    assert message.type == "message" and message.role == "assistant"
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == ANSWER
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert (message.usage.cache_read_input_tokens or 0) == 0 and (message.usage.cache_creation_input_tokens or 0) == 0
    [headers] = seen
    assert_guarded(headers)
    assert_usage_matches(ledger_rows("compat-an-create", 1), [message.usage])


def test_messages_stream(gateway, make_key, messages_endpoint):
    sdk, seen = recording(gateway, make_key("compat-an-stream"))
    with sdk.messages.stream(model=MOCK_A, max_tokens=100, messages=ASK) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and "content_block_start" in kinds and "content_block_delta" in kinds
    assert "message_delta" in kinds and kinds[-1] == "message_stop"
    assert final.content[0].text == ANSWER and final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    assert_guarded(seen[0])
    assert_usage_matches(ledger_rows("compat-an-stream", 1), [final.usage])


def test_tools_round_trip(gateway, make_key, messages_endpoint):
    """``tool_use`` in the answer, the client's ``tool_result`` back, the model answers from it."""
    sdk, seen = recording(gateway, make_key("compat-an-tools"))
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    knob = {"mock_tool_calls": [WEATHER_CALL]}
    first = sdk.messages.create(model=MOCK_A, max_tokens=200, tools=[WEATHER_TOOL], messages=asked, extra_body=knob)
    assert first.stop_reason == "tool_use"
    [use] = [b for b in first.content if b.type == "tool_use"]
    assert (use.name, use.input) == ("lookup_weather", {"city": "Paris"}) and use.id
    second = sdk.messages.create(
        model=MOCK_A,
        max_tokens=200,
        tools=[WEATHER_TOOL],
        extra_body=knob,
        messages=[
            *asked,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 24 °C"}]},
        ],
    )
    assert second.stop_reason == "end_turn"
    assert [b.text for b in second.content if b.type == "text"] == ["Mock answer from the tool: sunny, 24 °C"]
    assert len(seen) == 2 and all(assert_guarded(h) is None for h in seen)
    assert_usage_matches(ledger_rows("compat-an-tools", 2), [first.usage, second.usage])


def test_count_tokens(gateway, make_key, messages_endpoint):
    sdk, seen = recording(gateway, make_key("compat-an-count"))
    short = sdk.messages.count_tokens(model=MOCK_A, messages=ASK)
    longer = sdk.messages.count_tokens(model=MOCK_A, system="Answer briefly.", messages=ASK, tools=[WEATHER_TOOL])
    assert 0 < short.input_tokens < longer.input_tokens
    assert all(h.get("x-agentops-request-id") for h in seen)
    assert not UsageRecord.objects.filter(agent="compat-an-count").exists()  # counting is not a model call
