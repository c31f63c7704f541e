"""The gateway's wire format without a server: request validation (OpenAI's params named), the upper
token estimate, completions and stream chunks the SDK parses, and tool-call decisions applied."""

from __future__ import annotations

import json

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from agentops.gateway import wire
from agentops.gateway.tool_review import apply_decisions
from agentops.gateway.wire import WireError, parse_chat_request

ASK = [{"role": "user", "content": "hello"}]


def parse(**body) -> wire.ChatRequest:
    return parse_chat_request(json.dumps({"model": "m", "messages": ASK, **body}).encode())


def test_a_request_keeps_our_fields_apart_and_passes_the_rest_on():
    request = parse(max_tokens=50, temperature=0, stream=True, stream_options={"include_usage": True},
                    tools=[{"type": "function", "function": {"name": "f"}}], user="u", seed=1)  # fmt: skip
    assert (request.model, request.max_tokens, request.cap_field, request.temperature) == ("m", 50, "max_tokens", 0.0)
    assert request.stream and request.include_usage and request.has_tools and request.user == "u"
    assert set(request.upstream) == {"tools", "user", "seed"}
    assert parse(max_completion_tokens=9).cap_field == "max_completion_tokens"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "", "messages": ASK}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [1]}, "messages.[0]"),
        ({"model": "m", "messages": [{"role": "user"}]}, "messages.[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages.[0].content"),
        ({"model": "m", "messages": ASK, "max_tokens": True}, "max_tokens"),
        ({"model": "m", "messages": ASK, "max_tokens": 10**9}, "max_tokens"),
        ({"model": "m", "messages": ASK, "temperature": "hot"}, "temperature"),
        ({"model": "m", "messages": ASK, "temperature": float("nan")}, None),  # not JSON at all
        ({"model": "m", "messages": ASK, "top_p": 2}, "top_p"),
        ({"model": "m", "messages": ASK, "stream": "yes"}, "stream"),
        ({"model": "m", "messages": ASK, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": "m", "messages": ASK, "tools": {"x": 1}}, "tools"),
        ({"model": "m", "messages": ASK, "tools": [{"type": "function"}]}, "tools[0]"),
        ({"model": "m", "messages": ASK, "user": 7}, "user"),
        ({"model": "m", "messages": ASK, "response_format": "json"}, "response_format"),
    ],
)
def test_invalid_requests_are_400_naming_the_parameter(body, param):
    raw = json.dumps(body, allow_nan=True).encode()
    with pytest.raises(WireError) as error:
        parse_chat_request(raw)
    assert error.value.status == 400 and error.value.type == "invalid_request_error"
    if param is not None:
        assert error.value.param == param


def test_the_input_bound_covers_every_model_of_the_route_and_the_tool_definitions():
    chinese = [{"role": "user", "content": "预算不能超支。" * 300}]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    request = parse_chat_request(json.dumps({"model": "gpt-4o", "messages": chinese, "tools": tools}).encode())
    with_backup = wire.input_token_bound(request, ["gpt-4o", "local-llama"])  # a model with no known tokenizer
    assert with_backup >= len(chinese[0]["content"].encode())  # UTF-8 bytes bound the unknown tokenizer
    assert wire.input_token_bound(request, ["gpt-4o"]) < with_backup


def test_an_image_on_a_model_with_no_known_image_rule_is_a_400_naming_the_model():
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    body = {"model": "local-llama", "messages": [{"role": "user", "content": [image]}]}
    request = parse_chat_request(json.dumps(body).encode())
    with pytest.raises(WireError) as error:
        wire.input_token_bound(request, ["local-llama"])
    assert (
        error.value.status == 400 and "local-llama" in error.value.message and error.value.code == "unsupported_content"
    )


def test_completions_and_chunks_parse_as_the_sdks_own_types():
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]
    body = wire.completion(completion_id="chatcmpl-1", model="m", text="", tool_calls=calls, finish_reason="human",
                           input_tokens=3, output_tokens=4)  # fmt: skip
    parsed = ChatCompletion.model_validate(body)
    assert parsed.choices[0].finish_reason == "tool_calls" and parsed.usage.total_tokens == 7
    events = wire.chunks_of(wire.completion(completion_id="x", model="m", text="a" * 100, tool_calls=None,
                                            finish_reason="stop", input_tokens=1, output_tokens=2), True)  # fmt: skip
    assert events[-1] == wire.DONE
    chunks = [ChatCompletionChunk.model_validate(json.loads(e[6:])) for e in events[:-1]]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a" * 100
    assert chunks[-1].usage.completion_tokens == 2


def test_an_error_body_is_what_the_sdk_reads():
    error = WireError(429, "quota", type_="insufficient_quota", code="insufficient_quota", retryable=False)
    assert json.loads(error.body()) == {
        "error": {"message": "quota", "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}
    }
    assert (b"x-should-retry", b"false") in error.headers()
    assert openai  # the SDK reads body["error"]["code"] into exc.code (checked end to end in the gateway tests)


CALLS = [
    {"id": "a", "type": "function", "function": {"name": "lookup", "arguments": "{}"}},
    {"id": "b", "type": "function", "function": {"name": "delete_x", "arguments": '{"hard": true}'}},
]


def test_decisions_rewrite_the_tool_calls():
    message = {"role": "assistant", "content": None, "tool_calls": CALLS}
    modified, finish = apply_decisions(message, {1: {"decision": "modified", "arguments": {"hard": False}}})
    assert json.loads(modified["tool_calls"][1]["function"]["arguments"]) == {"hard": False} and finish is None
    rejected, finish = apply_decisions(message, {1: {"decision": "rejected", "comment": "no"}})
    assert [c["id"] for c in rejected["tool_calls"]] == ["a"] and "rejected by a reviewer: no" in rejected["content"]
    alone = {"role": "assistant", "content": "ok", "tool_calls": CALLS[1:]}
    taken, finish = apply_decisions(alone, {0: {"decision": "taken_over", "result": {"done": True}}})
    assert "tool_calls" not in taken and taken["content"] == 'ok\n{"done": true}' and finish == "stop"


def test_a_held_stream_tail_adds_only_the_new_text():
    original = {"content": "Sure.", "tool_calls": CALLS[1:]}
    rewritten = {"content": "Sure.\nThe call was rejected"}
    events = wire.held_tail({"id": "x", "created": 1, "model": "m"}, original, rewritten, "stop", None)
    chunks = [json.loads(e[6:]) for e in events]
    assert chunks[0]["choices"][0]["delta"] == {"content": "\nThe call was rejected"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
