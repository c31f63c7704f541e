"""The Anthropic ↔ chat-completions translations, both sides (pure functions, no server): the gateway's
Messages request into the guard's chat request and its answers back (agentops/gateway/messages_wire.py,
messages_stream.py), and the native provider's chat request into Messages and Messages answers and stream
events into chat completions (agentops/runtime/providers/anthropic_native.py)."""

from __future__ import annotations

import json

import pytest

from agentops.gateway import messages_wire
from agentops.gateway.messages_stream import ChunkEvents, events_of
from agentops.gateway.wire import WireError
from agentops.runtime.providers.anthropic_native import (
    NATIVE,
    NativeRequest,
    StreamToChunks,
    anthropic_body,
    chat_completion,
    chat_to_messages,
)
from agentops.runtime.providers.base import LLMRequest

TOOL = {"name": "lookup", "description": "d", "input_schema": {"type": "object", "properties": {"q": {}}}}


def parse(body: dict, headers: dict | None = None) -> messages_wire.MessagesRequest:
    return messages_wire.parse(json.dumps(body).encode(), headers or {})


def test_a_conversation_with_system_images_tool_use_and_tool_result_becomes_the_chat_request():
    request = parse(
        {
            "model": "m",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                        {"type": "text", "text": "Look"},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hm", "signature": "s"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "found"}],
                        },
                        {"type": "text", "text": "thanks"},
                    ],
                },
            ],
            "tools": [TOOL],
            "tool_choice": {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u1"},
            "top_k": 3,
            "mock_words": 4,
        },
        {"anthropic-version": "2023-06-01", "anthropic-beta": "b1", "x-api-key": "secret"},
    )
    chat = request.chat
    assert chat.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            {"type": "text", "text": "Look"},
        ]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"x"}'}}
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "found"},
        {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
    ]  # fmt: skip
    assert chat.upstream == {
        "mock_words": 4,  # a field Messages does not define passes on, as on chat completions
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": TOOL["input_schema"], "description": "d"}}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "parallel_tool_calls": False,
        "stop": ["END"],
        "user": "u1",
    }  # fmt: skip
    assert (chat.model, chat.max_tokens, chat.stream, request.native_only) == ("m", 100, False, True)
    assert request.native.headers == {"anthropic-version": "2023-06-01", "anthropic-beta": "b1"}
    assert "model" not in request.native.body and request.native.body["top_k"] == 3
    assert str(request.native) == "<native Anthropic request>"  # a parked settle never carries the prompt


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens: Field required"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model: Field required"),
        ({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document"}]}]},
         "messages.0.content.0: blocks of type 'document'"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
          "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "x"}},
         "tool_choice.type"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field_with_a_400(body, says):
    with pytest.raises(WireError) as refused:
        parse(body)
    status, _, payload = messages_wire.render_error(refused.value)
    assert status == 400 and says in refused.value.message
    assert json.loads(payload) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": refused.value.message},
    }


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, "authentication_error"), (403, "permission_error"), (404, "not_found_error"), (413, "request_too_large"),
     (429, "rate_limit_error"), (500, "api_error"), (503, "overloaded_error"), (504, "api_error")],
)  # fmt: skip
def test_gateway_errors_keep_their_status_and_retry_headers_in_anthropics_shape(status, kind):
    status_out, headers, body = messages_wire.render_error(WireError(status, "why", retry_after=2, retryable=False))
    assert status_out == status and json.loads(body)["error"] == {"type": kind, "message": "why"}
    assert (b"retry-after", b"2") in headers and (b"x-should-retry", b"false") in headers


def test_a_chat_completion_becomes_a_message_and_usage_splits_cache_reads_off():
    body = {
        "id": "chatcmpl-1",
        "model": "m-2024",
        "choices": [{"message": {"role": "assistant", "content": "Hi", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}]},
            "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 60}},
    }  # fmt: skip
    message = messages_wire.message_of(body, "msg_x")
    assert message["content"] == [
        {"type": "text", "text": "Hi"},
        {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": 1}},
    ]
    assert (message["id"], message["model"], message["stop_reason"]) == ("msg_x", "m-2024", "tool_use")
    assert message["usage"] == {"input_tokens": 40, "output_tokens": 7, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 60}  # fmt: skip
    assert messages_wire.message_of({**body, NATIVE: {"id": "msg_native"}}, "msg_x") == {"id": "msg_native"}


def test_a_whole_message_streams_as_anthropics_events_in_order():
    message = {
        "id": "msg_1", "model": "m", "stop_reason": "tool_use", "stop_sequence": None,
        "content": [{"type": "text", "text": "a" * 70}, {"type": "tool_use", "id": "t1", "name": "f", "input": {"k": "v"}}],
        "usage": {"input_tokens": 5, "output_tokens": 9},
    }  # fmt: skip
    events = [(e.split(b"\n")[0][7:].decode(), json.loads(e.split(b"\n")[1][6:])) for e in events_of(message)]
    assert [kind for kind, _ in events] == [
        "message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
        "content_block_stop", "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert events[6][1]["content_block"] == {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    assert json.loads(events[7][1]["delta"]["partial_json"]) == {"k": "v"}
    assert events[-2][1] == {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                             "usage": {"input_tokens": 5, "output_tokens": 9}}  # fmt: skip


def test_chunks_become_events_and_held_calls_come_after_the_text_once_reviewed():
    base = {"id": "c", "model": "m"}
    chunks = [
        {**base, "choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {**base, "choices": [{"delta": {"content": "Hello"}}]},
        {**base, "choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}}]},
        {**base, "choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}]}}]},
        {**base, "choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 4}},
    ]  # fmt: skip
    live = ChunkEvents("msg_1", "m")
    live.hold_calls = True
    sent = [event for chunk in chunks for event in live.feed(chunk)]
    assert [e.split(b"\n")[0] for e in sent] == [
        b"event: message_start",
        b"event: content_block_start",
        b"event: ping",
        b"event: content_block_delta",
    ]
    reviewed = {"role": "assistant", "content": "Hello\nThe call to `f` was rejected by a reviewer."}
    tail = b"".join(live.tail(reviewed, "stop", {"prompt_tokens": 10, "completion_tokens": 4}))
    assert b"tool_use" not in tail and b"rejected by a reviewer" in tail
    assert b'"stop_reason":"end_turn"' in tail and b'"input_tokens":10,"output_tokens":4' in tail


def test_the_native_provider_sends_the_clients_body_or_translates_a_chat_request():
    native = NativeRequest({"messages": [{"role": "user", "content": "hi"}], "top_k": 2, "max_tokens": 9}, {})
    request = LLMRequest(messages=[{"role": "user", "content": "hi"}], model="claude-x", max_tokens=9,
                         metadata={"anthropic_request": native})  # fmt: skip
    assert anthropic_body(request) == {"messages": [{"role": "user", "content": "hi"}], "top_k": 2, "max_tokens": 9,
                                       "model": "claude-x"}  # fmt: skip
    body = chat_to_messages(
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
            {"role": "user", "content": "next"},
        ],
        {"extra_body": {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required", "stop": "X"}},
    )  # fmt: skip
    assert body["system"] == "S" and body["stop_sequences"] == ["X"] and body["tool_choice"] == {"type": "any"}
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "r"}, {"type": "text", "text": "next"}]},
    ]  # fmt: skip
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]


def test_native_answers_and_events_become_chat_completions_with_cache_usage():
    message = {"id": "msg_1", "model": "claude-x-2024", "stop_reason": "max_tokens",
               "content": [{"type": "text", "text": "Hi"}],
               "usage": {"input_tokens": 5, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 3, "output_tokens": 2}}  # fmt: skip
    chat = chat_completion(message, "claude-x")
    assert chat["choices"][0]["finish_reason"] == "length" and chat["choices"][0]["message"]["content"] == "Hi"
    assert chat["usage"]["prompt_tokens"] == 28 and chat["usage"]["prompt_tokens_details"] == {"cached_tokens": 20}
    assert chat[NATIVE] == message
    stream = StreamToChunks("claude-x")
    chunks = [c for e in (
        {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x-2024", "usage": {"input_tokens": 5}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f"}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}},
        {"type": "message_stop"},
    ) for c in stream.feed(e)]  # fmt: skip
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "f"
    assert chunks[3]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["prompt_tokens"] == 5 and chunks[-1]["usage"]["completion_tokens"] == 4
    assert stream.done
