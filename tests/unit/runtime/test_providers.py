"""Providers: the OpenAI-compatible one (over a fake transport at the network edge), the simulated one and
the rule engine."""

from __future__ import annotations

import json

import httpx2
import pytest

from agentops.runtime.errors import ErrorClass, NoRuleMatched, ProviderError
from agentops.runtime.providers import (
    LLMRequest,
    OpenAICompatProvider,
    Provider,
    Rule,
    RuleEngine,
    SimulatedProvider,
    content_text,
    estimate_prompt_tokens,
)
from tests.fixtures.runtime import Edge

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "plan a trip to Rome"}]


def completion(content="Day 1: Colosseum", **extra):
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 5,
            "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 8},
        },
    }
    body.update(extra)
    return body


def test_openai_compat_sends_the_request_and_reads_usage():
    edge = Edge(httpx2.Response(200, json=completion()))
    provider = edge.provider()
    request = LLMRequest(
        MESSAGES, model="gpt-4o", max_tokens=50, temperature=0.2, extra={"response_format": {"type": "text"}}
    )
    result = provider.complete(request, timeout=7.5)
    sent = json.loads(edge.requests[0].content)
    assert sent == {
        "model": "gpt-4o",
        "messages": MESSAGES,
        "max_tokens": 50,
        "temperature": 0.2,
        "response_format": {"type": "text"},
    }
    assert edge.requests[0].extensions["timeout"]["read"] == 7.5
    assert (result.text, result.model, result.provider) == ("Day 1: Colosseum", "gpt-4o-2024", "edge")
    assert (result.input_tokens, result.output_tokens, result.cached_tokens) == (12, 5, 8)
    assert result.finish_reason == "stop" and result.raw is None and result.tool_calls is None
    assert isinstance(provider, Provider)


def test_openai_compat_builds_one_client_without_sdk_retries():
    provider = OpenAICompatProvider("p", "http://127.0.0.1:9/v1", "key")
    assert provider.client.max_retries == 0
    assert str(provider.client.base_url).startswith("http://127.0.0.1:9/v1")


def test_openai_compat_tool_calls_and_raw():
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    body = completion(content=None)
    body["choices"][0]["message"]["tool_calls"] = [call]
    edge = Edge(httpx2.Response(200, json=body))
    result = edge.provider(keep_raw=True).complete(LLMRequest(MESSAGES, model="m"), timeout=1)
    assert result.text == "" and result.tool_calls[0]["function"]["name"] == "lookup"
    assert result.raw["id"] == "chatcmpl-1"


@pytest.mark.parametrize(
    ("response", "cls", "retry_after"),
    [
        (httpx2.Response(429, headers={"retry-after": "2"}, json={"error": {}}), ErrorClass.RATE_LIMIT, 2.0),
        (httpx2.Response(503, json={"error": {}}), ErrorClass.SERVICE_UNAVAILABLE, None),
        (httpx2.Response(401, json={"error": {}}), ErrorClass.AUTHENTICATION, None),
        (httpx2.Response(400, json={"error": {}}), ErrorClass.BAD_REQUEST, None),
        (
            httpx2.Response(200, content=b'{"id": "x", "choi', headers={"content-type": "application/json"}),
            ErrorClass.INVALID_RESPONSE,
            None,
        ),
        (httpx2.Response(200, json=completion(choices=[])), ErrorClass.INVALID_RESPONSE, None),
        (httpx2.ConnectError("refused"), ErrorClass.CONNECTION, None),
        (httpx2.ReadTimeout("slow"), ErrorClass.TIMEOUT, None),
    ],
)
def test_openai_compat_failures_leave_classified(response, cls, retry_after):
    provider = Edge(response).provider()
    with pytest.raises(ProviderError) as info:
        provider.complete(LLMRequest(MESSAGES, model="gpt-4o"), timeout=1)
    err = info.value
    assert (err.error_class, err.retry_after, err.provider, err.model) == (cls, retry_after, "edge", "gpt-4o")


@pytest.mark.parametrize(
    ("response", "sdk_class"),
    [
        (
            httpx2.Response(429, headers={"retry-after": "2"}, json={"error": {"message": "slow down"}}),
            "RateLimitError",
        ),
        (httpx2.Response(500, json={"error": {}}), "InternalServerError"),
        (httpx2.Response(418, text="teapot"), "APIStatusError"),
        (httpx2.ConnectError("refused"), "APIConnectionError"),
        (httpx2.ReadTimeout("slow"), "APITimeoutError"),
    ],
)
def test_the_lean_transport_raises_the_sdks_own_exceptions(response, sdk_class):
    """The SDK's request machinery is bypassed (lean_http.py) but not its exception classes: the classifier and
    anything reading ``__cause__`` (Retry-After on the response) see what the SDK raised before."""
    edge = Edge(response)
    with pytest.raises(ProviderError) as info:
        edge.provider().complete(LLMRequest(MESSAGES, model="gpt-4o"), timeout=1)
    cause = info.value.__cause__
    assert type(cause).__name__ == sdk_class
    if sdk_class == "RateLimitError":
        assert cause.response.headers["retry-after"] == "2" and str(cause) == "Error code: 429 - slow down"
    sent = edge.requests[0]
    assert sent.headers["authorization"] == "Bearer k" and sent.headers["content-type"] == "application/json"
    assert not any(name.lower().startswith("x-stainless") for name in sent.headers)


def test_the_lean_transport_streams_sse_lines():
    chunk = {"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
    sse = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
    edge = Edge(httpx2.Response(200, content=sse, headers={"content-type": "text/event-stream"}))
    result = edge.provider().open_stream(LLMRequest(MESSAGES, model="m", stream=True), timeout=1)
    assert [c["choices"][0]["delta"]["content"] for _, c in result.stream] == ["hi"]
    assert json.loads(edge.requests[0].content)["stream_options"] == {"include_usage": True}


def test_simulated_is_deterministic_and_counts_tokens():
    sim = SimulatedProvider()
    request = LLMRequest(MESSAGES, model="sim-large", max_tokens=1000)
    a, b = sim.complete(request, 1), SimulatedProvider().complete(request, 1)
    assert a == b and "plan a trip to Rome" in a.text
    assert a.input_tokens == estimate_prompt_tokens(MESSAGES) and a.output_tokens > 0
    assert sim.complete(LLMRequest(MESSAGES, model="sim-large", max_tokens=2), 1).output_tokens == 2
    label = sim.complete(LLMRequest(MESSAGES, model="s", operation="classify"), 1).text
    assert label in {"positive", "negative", "neutral"}


def test_simulated_faults_follow_the_seeded_rates():
    def run(seed):
        sim = SimulatedProvider(
            fault_rates={"RateLimitError": 0.3, ErrorClass.SERVICE_UNAVAILABLE: 0.2}, seed=seed, retry_after=1.5
        )
        out = []
        for _ in range(200):
            try:
                sim.complete(LLMRequest(MESSAGES, model="m"), 1)
                out.append("ok")
            except ProviderError as err:
                out.append(err.error_class.value)
                if err.error_class is ErrorClass.RATE_LIMIT:
                    assert err.retry_after == 1.5 and err.status == 429
        return out

    first = run(3)
    assert first == run(3)
    assert 40 <= first.count("RateLimitError") <= 80 and 20 <= first.count("ServiceUnavailable") <= 60


def test_simulated_latency_past_the_timeout_is_a_timeout():
    slept = []
    sim = SimulatedProvider(latency=2.0, sleep=slept.append)
    with pytest.raises(ProviderError) as info:
        sim.complete(LLMRequest(MESSAGES, model="m"), timeout=0.5)
    assert info.value.error_class is ErrorClass.TIMEOUT and slept == [0.5]
    sim.complete(LLMRequest(MESSAGES, model="m"), timeout=5)
    assert slept == [0.5, 2.0]


def test_rules_first_match_answers_with_groups():
    engine = RuleEngine(
        [
            Rule(r"order (?P<order>\d+)", "Order {order} ships tomorrow.", name="order_status"),
            Rule(r"order", "Which order?", name="order_generic"),
            Rule(r"refund", "Refunds take 5 days.", name="refund", operations=("support",)),
        ]
    )
    result = engine.complete(LLMRequest([{"role": "user", "content": "where is order 42?"}]))
    assert (result.text, result.provider, result.input_tokens) == ("Order 42 ships tomorrow.", "rules", 0)
    assert result.model == "rule:order_status"
    assert engine.complete(LLMRequest([{"role": "user", "content": "ORDER?"}])).text == "Which order?"
    with pytest.raises(NoRuleMatched):
        engine.complete(LLMRequest([{"role": "user", "content": "refund please"}], operation="planning"))
    assert engine.complete(LLMRequest([{"role": "user", "content": "refund"}], operation="support")).text


def test_rule_answers_with_literal_braces_are_kept():
    engine = RuleEngine([Rule("json", 'Use {"a": 1}.')])
    assert engine.complete(LLMRequest([{"role": "user", "content": "json"}])).text == 'Use {"a": 1}.'


def test_content_parts():
    parts = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}, {"type": "text", "text": "b"}]
    assert content_text(parts) == "a\nb"
    assert LLMRequest([{"role": "user", "content": parts}]).last_user_text() == "a\nb"
