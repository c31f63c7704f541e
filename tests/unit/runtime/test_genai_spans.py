"""OpenTelemetry GenAI semantic conventions on the guard's spans (observability/genai.py), captured with the
SDK's in-memory exporter: one ``chat {model}`` CLIENT span per attempt (retries and fallback hops each get
theirs) under the guarded call's ``agentops.llm {operation}`` span, usage with the cache-read split, the
finish reasons, ``error.type`` on a failed attempt, message content only with the opt-in flag, a stream's
attempt ended with its usage, the priced cost on the guarded call, and a caller's ``traceparent`` continued."""

from __future__ import annotations

import dataclasses
import json

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, StatusCode

from agentops.observability import genai
from agentops.runtime.errors import ErrorClass
from agentops.runtime.guard import GuardDeps, guarded_llm
from agentops.runtime.protocols import RecordingBudgetGate
from agentops.runtime.providers import LLMRequest, LLMResult
from tests.unit.runtime.test_guard import Harness, perr

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def h() -> Harness:
    return Harness()


def finished(exporter, prefix: str = "") -> list:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def test_every_attempt_and_fallback_hop_is_a_client_chat_span_under_the_guarded_call(h, spans):
    spans.clear()
    # The primary fails once (transient), then for good (permanent): the backup answers.
    h.provider.script("large", perr(ErrorClass.CONNECTION), perr(ErrorClass.AUTHENTICATION, status=401))
    request = LLMRequest(
        [{"role": "user", "content": "plan"}],
        operation="planning",
        max_tokens=100,
        temperature=0.2,
        metadata={"session": "s-1", "step": 3},
    )
    result = guarded_llm(request, deps=h.deps)
    assert result.handler == "backup" and result.model == "small"

    (guard,) = finished(spans, "agentops.llm")
    chats = finished(spans, "chat ")
    assert guard.name == "agentops.llm planning" and guard.kind is SpanKind.INTERNAL
    assert [s.name for s in chats] == ["chat large", "chat large", "chat small"]
    assert all(s.kind is SpanKind.CLIENT and s.parent.span_id == guard.context.span_id for s in chats)
    assert all(s.context.trace_id == guard.context.trace_id for s in chats)
    first, second, backup = (s.attributes for s in chats)
    assert (first[genai.HOP], first[genai.ATTEMPT], first[genai.ERROR_TYPE]) == (0, 1, "ConnectionError")
    assert (second[genai.ATTEMPT], second[genai.ERROR_TYPE], second["http.response.status_code"]) == (
        2,
        "AuthenticationError",
        401,
    )
    assert chats[0].status.status_code is StatusCode.ERROR and genai.INPUT_TOKENS not in first
    assert backup[genai.OPERATION] == "chat" and backup[genai.PROVIDER] == "openai"
    assert backup[genai.REQUEST_MODEL] == "small" and backup[genai.RESPONSE_MODEL] == "small"
    assert (backup[genai.HOP], backup[genai.ATTEMPT], backup[genai.HANDLER]) == (1, 1, "backup")
    assert (backup[genai.INPUT_TOKENS], backup[genai.OUTPUT_TOKENS]) == (10, 5)
    assert backup[genai.FINISH_REASONS] == ("stop",) and genai.ERROR_TYPE not in backup
    assert backup[genai.CONVERSATION] == "s-1" and backup[genai.REQUEST_MAX_TOKENS] == 100
    assert backup[genai.REQUEST_TEMPERATURE] == 0.2 and backup[genai.BREAKER_STATE] == "closed"
    assert chats[2].status.status_code is not StatusCode.ERROR
    # The guarded call carries ours and no gen_ai usage (backends that price spans count each call once).
    g = guard.attributes
    assert (g[genai.HANDLER], g["agentops.attempts"], g["agentops.fallback.hops"]) == ("backup", 3, 2)
    assert g["agentops.step"] == 3 and g[genai.CONVERSATION] == "s-1" and g["agentops.outcome"] == "fallback"
    assert not any(name.startswith("gen_ai.usage") or name == genai.OPERATION for name in g)
    # No content without the opt-in flag.
    assert all(genai.INPUT_MESSAGES not in s.attributes and genai.OUTPUT_MESSAGES not in s.attributes for s in chats)


def test_message_content_only_with_the_opt_in_flag(h, spans, monkeypatch):
    monkeypatch.setenv(genai.CAPTURE_CONTENT_ENV, "true")
    spans.clear()
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "plan a trip"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"city": "Oslo"}'}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]  # fmt: skip
    guarded_llm(LLMRequest(messages, operation="planning", max_tokens=50), deps=h.deps)
    (chat,) = finished(spans, "chat ")
    sent = json.loads(chat.attributes[genai.INPUT_MESSAGES])
    assert sent == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "plan a trip"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "name": "lookup", "id": "call_1", "arguments": {"city": "Oslo"}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "response": "sunny", "id": "call_1"}]},
    ]  # fmt: skip
    answered = json.loads(chat.attributes[genai.OUTPUT_MESSAGES])
    assert answered == [
        {"role": "assistant", "parts": [{"type": "text", "content": "answer from large"}], "finish_reason": "stop"}
    ]
    monkeypatch.setenv(genai.CAPTURE_CONTENT_ENV, "false")
    spans.clear()
    guarded_llm(LLMRequest(messages, operation="planning", max_tokens=50), deps=h.deps)
    (chat,) = finished(spans, "chat ")
    assert genai.INPUT_MESSAGES not in chat.attributes and genai.OUTPUT_MESSAGES not in chat.attributes


class CachingProvider:
    """Answers with part of the prompt read from the provider's cache."""

    gen_ai_provider = "anthropic"
    base_url = "https://llm.example.com:8443/v1"

    def __init__(self, inner) -> None:
        self.inner = inner

    def complete(self, request, timeout):
        answer = self.inner.complete(request, timeout)
        return dataclasses.replace(answer, cached_tokens=4, raw={"id": "msg_123"})


def test_usage_carries_the_cache_read_split_and_the_server(h, spans):
    deps = dataclasses.replace(h.deps, providers={"fake": CachingProvider(h.provider)})
    spans.clear()
    guarded_llm(LLMRequest([{"role": "user", "content": "hi"}], operation="planning", max_tokens=50), deps=deps)
    (chat,) = finished(spans, "chat ")
    a = chat.attributes
    assert (a[genai.INPUT_TOKENS], a[genai.CACHE_READ_TOKENS], a[genai.OUTPUT_TOKENS]) == (10, 4, 5)
    assert a[genai.PROVIDER] == "anthropic" and a[genai.RESPONSE_ID] == "msg_123"
    assert (a["server.address"], a["server.port"]) == ("llm.example.com", 8443)


class StreamingProvider:
    """Opens a stream of two chunks, the last with the usage (as OpenAI sends with include_usage)."""

    def complete(self, request, timeout):  # pragma: no cover - the guard asks open_stream for a stream
        raise AssertionError("not streamed")

    def open_stream(self, request, timeout):
        chunks = [
            {"model": "large-2024", "choices": [{"delta": {"content": "hel"}}]},
            {
                "model": "large-2024",
                "choices": [{"delta": {"content": "lo"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 3}},
            },
        ]
        return LLMResult("", "large-2024", "fake", stream=iter([(json.dumps(c).encode(), c) for c in chunks]))


def test_a_streams_attempt_span_ends_with_the_stream_and_its_usage(h, spans, monkeypatch):
    monkeypatch.setenv(genai.CAPTURE_CONTENT_ENV, "true")
    deps = dataclasses.replace(h.deps, providers={"fake": StreamingProvider()})
    spans.clear()
    request = LLMRequest([{"role": "user", "content": "hi"}], operation="planning", max_tokens=50, stream=True)
    result = guarded_llm(request, deps=deps)
    assert finished(spans) == []  # nothing ends before the stream did
    assert [chunk["model"] for _, chunk in result.stream] == ["large-2024", "large-2024"]
    (guard,) = finished(spans, "agentops.llm")
    (chat,) = finished(spans, "chat ")
    assert chat.parent.span_id == guard.context.span_id and chat.attributes[genai.REQUEST_STREAM] is True
    a = chat.attributes
    assert (a[genai.INPUT_TOKENS], a[genai.OUTPUT_TOKENS], a[genai.CACHE_READ_TOKENS]) == (7, 2, 3)
    assert a[genai.RESPONSE_MODEL] == "large-2024" and a[genai.FINISH_REASONS] == ("stop",)
    assert json.loads(a[genai.OUTPUT_MESSAGES])[0]["parts"] == [{"type": "text", "content": "hello"}]


class PricingGate(RecordingBudgetGate):
    """A budget gate whose settle returns the priced ledger row, as budgets.gate does."""

    def settle(self, handle, usage):
        super().settle(handle, usage)
        return {"cost_usd": 0.0125}


def test_the_priced_cost_goes_on_the_guarded_call_even_when_the_settle_is_deferred(h, spans):
    gate = PricingGate()
    deps: GuardDeps = dataclasses.replace(h.deps, budget=gate)
    spans.clear()
    later: list = []
    guarded_llm(LLMRequest([{"role": "user", "content": "hi"}], operation="planning", max_tokens=50), deps=deps,
                defer=later.append)  # fmt: skip
    assert finished(spans, "agentops.llm") == []  # the span waits for the deferred settle
    for work in later:
        work()
    (guard,) = finished(spans, "agentops.llm")
    assert guard.attributes[genai.COST_USD] == pytest.approx(0.0125)
    assert guard.attributes[genai.BUDGET_RESERVATION] == gate.settled[0][0]  # the reservation it settled


def test_a_callers_traceparent_is_continued(h, spans):
    spans.clear()
    token = otel_context.attach(propagate.extract({"traceparent": TRACEPARENT}))
    try:
        guarded_llm(LLMRequest([{"role": "user", "content": "hi"}], operation="planning", max_tokens=50), deps=h.deps)
    finally:
        otel_context.detach(token)
    (guard,) = finished(spans, "agentops.llm")
    (chat,) = finished(spans, "chat ")
    assert format(guard.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(guard.parent.span_id, "016x") == "b7ad6b7169203331" and guard.parent.is_remote
    assert chat.context.trace_id == guard.context.trace_id
