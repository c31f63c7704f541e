"""The official ``openai`` SDK, unmodified, pointed at the gateway's ``/v1`` (issue 16, item 6): chat,
a stream with usage in its last chunk, the async client, a tool round trip, ``parse`` structured output;
and the Responses API (create, stream) and embeddings once the gateway serves them. Each test checks the
answer's content and usage, the ledger row the call left and the guard's headers."""

from __future__ import annotations

import base64
import json
import struct

import openai
import pytest
from pydantic import BaseModel

from tests.integration.compat.conftest import assert_guarded, ledger_rows
from tests.integration.gateway.conftest import MOCK_A

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "What is the capital of France?"
ANSWER = f"Mock answer to: {QUESTION}"
ASK = [{"role": "user", "content": QUESTION}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_CALL = {"name": "lookup_weather", "arguments": {"city": "Paris"}}


def recording(gateway: str, key: str) -> tuple[openai.OpenAI, list]:
    """An SDK client on the gateway and the list its HTTP responses' headers are appended to."""
    seen: list = []
    http = openai.DefaultHttpxClient(event_hooks={"response": [lambda response: seen.append(response.headers)]})
    return openai.OpenAI(base_url=gateway, api_key=key, max_retries=0, http_client=http), seen


def test_chat(gateway, make_key):
    sdk, seen = recording(gateway, make_key("compat-oa-chat"))
    answer = sdk.chat.completions.create(model=MOCK_A, messages=ASK, max_tokens=50)
    assert answer.choices[0].message.content == ANSWER and answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    [headers] = seen
    assert_guarded(headers)
    assert headers["x-agentops-model"] == MOCK_A
    [row] = ledger_rows("compat-oa-chat", 1)
    assert (row.model, row.input_tokens, row.output_tokens) == (
        MOCK_A,
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
    )


def test_stream_with_usage_in_the_last_chunk(gateway, make_key):
    sdk, seen = recording(gateway, make_key("compat-oa-stream"))
    chunks = list(
        sdk.chat.completions.create(
            model=MOCK_A, messages=ASK, stream=True, stream_options={"include_usage": True}, max_tokens=50
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert [c.usage is not None for c in chunks].index(True) == len(chunks) - 1  # usage only in the last
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens > 0
    assert_guarded(seen[0])
    [row] = ledger_rows("compat-oa-stream", 1)
    assert (row.input_tokens, row.output_tokens) == (last.usage.prompt_tokens, last.usage.completion_tokens)


async def test_async_client(gateway, make_key):
    seen: list = []

    async def keep(response) -> None:
        seen.append(response.headers)

    sdk = openai.AsyncOpenAI(
        base_url=gateway,
        api_key=make_key("compat-oa-async"),
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(event_hooks={"response": [keep]}),
    )
    answer = await sdk.chat.completions.create(model=MOCK_A, messages=ASK)
    assert answer.choices[0].message.content == ANSWER
    assert_guarded(seen[0])
    [row] = ledger_rows("compat-oa-async", 1)  # the ORM in a test's event loop: DJANGO_ALLOW_ASYNC_UNSAFE
    assert (row.input_tokens, row.output_tokens) == (answer.usage.prompt_tokens, answer.usage.completion_tokens)


def test_tools_round_trip(gateway, make_key):
    """The model asks for a tool, the client runs it and sends the result back, the model answers from it."""
    sdk, seen = recording(gateway, make_key("compat-oa-tools"))
    messages = list(ASK)
    first = sdk.chat.completions.create(
        model=MOCK_A, messages=messages, tools=[WEATHER_TOOL], extra_body={"mock_tool_calls": [WEATHER_CALL]}
    )
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("lookup_weather", {"city": "Paris"})
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 °C"},
    ]
    second = sdk.chat.completions.create(
        model=MOCK_A, messages=messages, tools=[WEATHER_TOOL], extra_body={"mock_tool_calls": [WEATHER_CALL]}
    )
    assert second.choices[0].message.content == "Mock answer from the tool: sunny, 24 °C"
    assert second.choices[0].finish_reason == "stop"
    assert len(seen) == 2 and all(assert_guarded(h) is None for h in seen)
    rows = ledger_rows("compat-oa-tools", 2)
    assert [(r.input_tokens, r.output_tokens) for r in rows] == [
        (first.usage.prompt_tokens, first.usage.completion_tokens),
        (second.usage.prompt_tokens, second.usage.completion_tokens),
    ]


class Capital(BaseModel):
    city: str
    country: str


@pytest.mark.parametrize("parse", ["chat.completions.parse", "beta.chat.completions.parse"])
def test_parse_structured_output(gateway, make_key, mock, parse):
    """``parse`` sends the Pydantic model as a ``json_schema`` response format and parses the answer."""
    agent = "compat-oa-parse-" + ("beta" if parse.startswith("beta") else "ga")
    sdk, seen = recording(gateway, make_key(agent))
    if parse.startswith("beta") and not hasattr(sdk.beta, "chat"):
        pytest.skip(f"openai {openai.__version__} has no client.beta.chat (parse moved to client.chat.completions)")
    method = sdk.beta.chat.completions.parse if parse.startswith("beta") else sdk.chat.completions.parse
    answer = method(
        model=MOCK_A,
        messages=ASK,
        response_format=Capital,
        extra_body={"mock_content": '{"city": "Paris", "country": "France"}'},
    )
    assert answer.choices[0].message.parsed == Capital(city="Paris", country="France")
    sent = mock.stats()["last_request"]["body"]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Capital"
    assert sent["json_schema"]["schema"]["required"] == ["city", "country"]
    assert_guarded(seen[0])
    [row] = ledger_rows(agent, 1)
    assert (row.input_tokens, row.output_tokens) == (answer.usage.prompt_tokens, answer.usage.completion_tokens)


# --- the Responses API -----------------------------------------------------------------------------------


def test_responses_create(gateway, make_key, endpoint):
    endpoint("/responses")
    sdk, seen = recording(gateway, make_key("compat-oa-responses"))
    response = sdk.responses.create(model=MOCK_A, input=QUESTION, instructions="Answer briefly.")
    assert response.status == "completed" and response.output_text == ANSWER
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert_guarded(seen[0])
    [row] = ledger_rows("compat-oa-responses", 1)
    assert (row.model, row.input_tokens, row.output_tokens) == (
        MOCK_A,
        response.usage.input_tokens,
        response.usage.output_tokens,
    )
    again = sdk.responses.retrieve(response.id)
    assert again.id == response.id and again.output_text == ANSWER


def test_responses_stream(gateway, make_key, endpoint):
    endpoint("/responses")
    sdk, seen = recording(gateway, make_key("compat-oa-responses-stream"))
    with sdk.responses.stream(model=MOCK_A, input=QUESTION) as stream:
        kinds, deltas = [], []
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_item.done" in kinds
    assert "".join(deltas) == ANSWER == final.output_text
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    assert_guarded(seen[0])
    [row] = ledger_rows("compat-oa-responses-stream", 1)
    assert (row.input_tokens, row.output_tokens) == (final.usage.input_tokens, final.usage.output_tokens)


# --- embeddings ------------------------------------------------------------------------------------------


def test_embeddings_float_and_base64(gateway, make_key, endpoint):
    endpoint("/embeddings")
    sdk, seen = recording(gateway, make_key("compat-oa-embeddings"))
    inputs = ["The capital of France", "Paris is sunny"]
    floats = sdk.embeddings.create(model="text-embedding-3-small", input=inputs, dimensions=8)
    assert [d.index for d in floats.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in floats.data) and floats.data[0].embedding != floats.data[1].embedding
    assert floats.usage.prompt_tokens > 0 and floats.usage.total_tokens == floats.usage.prompt_tokens
    again = sdk.embeddings.create(model="text-embedding-3-small", input=inputs, dimensions=8)
    assert [d.embedding for d in again.data] == [d.embedding for d in floats.data]  # deterministic
    raw = sdk.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=inputs[0], dimensions=8, encoding_format="base64"
    )
    packed = raw.http_response.json()["data"][0]["embedding"]
    assert list(struct.unpack("<8f", base64.b64decode(packed))) == pytest.approx(floats.data[0].embedding, rel=1e-6)
    for headers in seen:
        assert_guarded(headers)
    assert seen[1]["x-agentops-cache"] == "hit"  # the same input again: the exact cache
    rows = ledger_rows("compat-oa-embeddings", 3)
    # Each row is settled after its answer went back, so the hit's row may be written before the first miss's.
    assert sorted((r.cached, r.model) for r in rows) == [(False, "text-embedding-3-small"), (False, "text-embedding-3-small"), (True, "text-embedding-3-small")]  # fmt: skip
    assert (rows[0].input_tokens, rows[0].output_tokens) == (floats.usage.prompt_tokens, 0)
    assert rows[2].input_tokens == raw.parse().usage.prompt_tokens
