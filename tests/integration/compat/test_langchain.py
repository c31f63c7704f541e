"""langchain-openai's ``ChatOpenAI``, unmodified, pointed at the gateway's ``/v1`` (issue 16, item 6):
invoke, stream, ``bind_tools``, and ``use_responses_api=True`` once the gateway serves the Responses API.
``include_response_headers=True`` (a ChatOpenAI option) puts the gateway's headers in the message's
``response_metadata``; each test checks content, usage, the ledger row and those headers."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from langchain_openai import ChatOpenAI

from tests.integration.compat.conftest import assert_guarded, ledger_rows
from tests.integration.gateway.conftest import MOCK_A

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "What is the capital of France?"
ANSWER = f"Mock answer to: {QUESTION}"
WEATHER_CALL = {"name": "lookup_weather", "arguments": {"city": "Paris"}}


def lookup_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def chat_model(gateway: str, key: str, **options) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=gateway, api_key=key, model=MOCK_A, max_retries=0, include_response_headers=True, **options
    )


def test_invoke(gateway, make_key):
    message = chat_model(gateway, make_key("compat-lc-invoke")).invoke(QUESTION)
    assert message.content == ANSWER
    usage = message.usage_metadata
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert message.response_metadata["finish_reason"] == "stop"
    assert_guarded(message.response_metadata["headers"])
    [row] = ledger_rows("compat-lc-invoke", 1)
    assert (row.model, row.input_tokens, row.output_tokens) == (MOCK_A, usage["input_tokens"], usage["output_tokens"])


def test_stream(gateway, make_key):
    chunks = list(chat_model(gateway, make_key("compat-lc-stream"), stream_usage=True).stream(QUESTION))
    assert len(chunks) > 2 and all(isinstance(c, AIMessageChunk) for c in chunks)
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert whole.content == ANSWER
    usage = whole.usage_metadata  # from the last chunk (stream_options.include_usage, asked by stream_usage)
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert_guarded(chunks[0].response_metadata["headers"])
    [row] = ledger_rows("compat-lc-stream", 1)
    assert (row.input_tokens, row.output_tokens) == (usage["input_tokens"], usage["output_tokens"])


def test_bind_tools_round_trip(gateway, make_key):
    model = chat_model(gateway, make_key("compat-lc-tools")).bind_tools(
        [lookup_weather], extra_body={"mock_tool_calls": [WEATHER_CALL]}
    )
    asked = [HumanMessage("What is the weather in Paris?")]
    first = model.invoke(asked)
    [call] = first.tool_calls
    assert (call["name"], call["args"]) == ("lookup_weather", {"city": "Paris"})
    assert first.response_metadata["finish_reason"] == "tool_calls"
    result = lookup_weather(**call["args"])
    second = model.invoke([*asked, first, ToolMessage(result, tool_call_id=call["id"])])
    assert second.content == "Mock answer from the tool: sunny in Paris" and second.tool_calls == []
    for message in (first, second):
        assert_guarded(message.response_metadata["headers"])
    rows = ledger_rows("compat-lc-tools", 2)
    assert [(r.input_tokens, r.output_tokens) for r in rows] == [
        (m.usage_metadata["input_tokens"], m.usage_metadata["output_tokens"]) for m in (first, second)
    ]


def test_use_responses_api(gateway, make_key, endpoint):
    endpoint("/responses")
    model = chat_model(gateway, make_key("compat-lc-responses"), use_responses_api=True)
    message = model.invoke(QUESTION)
    assert message.text == ANSWER
    usage = message.usage_metadata
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert message.response_metadata["id"].startswith("resp")
    assert_guarded(message.response_metadata["headers"])
    [row] = ledger_rows("compat-lc-responses", 1)
    assert (row.input_tokens, row.output_tokens) == (usage["input_tokens"], usage["output_tokens"])
