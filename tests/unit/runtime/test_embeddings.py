"""``guarded_embeddings`` with fakes at every edge, and the OpenAI-compatible provider's ``embed`` under the
real SDK: the reservation holds the input tokens (no output) and settles what the provider reported, the
fallback chain moves to the backup on transient failures and skips an open breaker, a refused budget is never
downgraded or handed to a human, the exact cache answers at no cost, and one ``embeddings {model}`` CLIENT span
under the guarded call's span."""

from __future__ import annotations

import json

import httpx2
import pytest
from opentelemetry.trace import SpanKind

from agentops.runtime.breaker import BreakerSettings
from agentops.runtime.cache import CacheSpec, TwoLevelCache
from agentops.runtime.config import RuntimeConfig, StaticConfigSource
from agentops.runtime.embeddings import guarded_embeddings
from agentops.runtime.errors import ErrorClass, FallbackExhausted, ProviderError
from agentops.runtime.guard import GuardDeps, make_breaker_registry
from agentops.runtime.protocols import BudgetExceeded, RecordingBudgetGate, RecordingUsageSink
from agentops.runtime.providers.base import EmbeddingsRequest, EmbeddingsResult
from agentops.runtime.providers.simulated import SimulatedProvider
from agentops.runtime.retry import RetryPolicy, RetrySettings
from agentops.runtime.routing import Route, Target
from tests.fixtures.runtime import Edge, FakeClock, ScriptedProvider, Sleeper

CONFIG = RuntimeConfig(
    retry=RetrySettings(default=RetryPolicy(2, 0.01, 0.1, jitter=False), budget=10),
    breaker=BreakerSettings(failure_threshold=3, recovery_timeout=30.0),
)
ROUTE = Route("embeddings", (Target("fake", "emb-a"), Target("fake", "emb-b")))


class Embedder:
    """Answers one vector per input; ``script[model]`` raises its errors first."""

    name = "fake"

    def __init__(self, usage: bool = True) -> None:
        self.script: dict[str, list[Exception]] = {}
        self.calls: list[str] = []
        self.usage = usage

    def embed(self, request: EmbeddingsRequest, timeout: float) -> EmbeddingsResult:
        self.calls.append(request.model)
        queue = self.script.get(request.model) or []
        if queue:
            raise queue.pop(0)
        body = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": [0.5, 0.5]} for i in range(request.item_count)],
            "model": f"{request.model}-v2",
        }
        if self.usage:
            body["usage"] = {"prompt_tokens": 7, "total_tokens": 7}
        return EmbeddingsResult(body["model"], self.name, body, 7 if self.usage else None, json.dumps(body).encode())


class Harness:
    def __init__(self, embedder=None, **deps) -> None:
        self.clock = FakeClock(start=1000.0)
        self.source = StaticConfigSource(CONFIG)
        self.embedder = embedder or Embedder()
        self.budget = RecordingBudgetGate()
        self.usage = RecordingUsageSink()
        self.deps = GuardDeps(
            **{
                "config": self.source,
                "providers": {"fake": self.embedder},
                "breakers": make_breaker_registry(None, self.source, clock=self.clock),
                "budget": self.budget,
                "usage": self.usage,
                "clock": self.clock,
                "sleep": Sleeper(self.clock),
                **deps,
            }
        )

    def call(self, value="hello", route: Route = ROUTE, bound: int | None = 12, **kw):
        metadata = {"agent": "a", "cache_scope": "a"}
        if bound is not None:
            metadata["prompt_tokens_estimate"] = bound
        request = EmbeddingsRequest(input=value, model=route.chain[0].model, metadata=metadata)
        return guarded_embeddings(request, deps=self.deps, route=route, **kw)


def test_the_reservation_holds_the_input_bound_and_settles_the_reported_tokens(spans):
    spans.clear()
    h = Harness()
    answer = h.call(["a", "b"])
    result = answer.result
    assert (result.handler, result.model, result.input_tokens, result.output_tokens) == ("primary", "emb-a-v2", 7, 0)
    assert [item["index"] for item in result.raw["data"]] == [0, 1] and answer.content is not None
    [meta] = h.budget.reserved
    assert (meta["estimated_input_tokens"], meta["estimated_output_tokens"], meta["estimated_tokens"]) == (12, 0, 12)
    assert meta["models"] == ["emb-a", "emb-b"] and meta["operation"] == "embeddings"
    [(_, usage)] = h.budget.settled
    assert (usage["model"], usage["requested_model"], usage["input_tokens"], usage["output_tokens"]) == (
        "emb-a-v2", "emb-a", 7, 0,
    )  # fmt: skip
    [span] = [s for s in spans.get_finished_spans() if s.name.startswith("embeddings")]  # the attempt: CLIENT
    assert span.name == "embeddings emb-a" and span.attributes["gen_ai.operation.name"] == "embeddings"
    assert span.attributes["gen_ai.usage.input_tokens"] == 7 and span.kind is SpanKind.CLIENT
    assert span.attributes["gen_ai.response.model"] == "emb-a-v2" and span.attributes["gen_ai.request.model"] == "emb-a"
    [guard] = [s for s in spans.get_finished_spans() if s.name == "agentops.embeddings embeddings"]
    assert span.parent.span_id == guard.context.span_id and guard.attributes["agentops.handler"] == "primary"


def test_without_the_providers_usage_the_call_is_charged_the_bound_it_reserved():
    h = Harness(Embedder(usage=False))
    assert h.call(bound=None, value="hello").result.input_tokens == 5  # "hello": 5 UTF-8 bytes, no tokenizer


def test_transient_failures_fall_back_to_the_backup_and_open_the_primarys_breaker():
    h = Harness()
    h.embedder.script["emb-a"] = [ProviderError(ErrorClass.SERVICE_UNAVAILABLE, "down", status=503)] * 9
    first = h.call("one").result
    assert (first.handler, first.model) == ("backup", "emb-b-v2")
    # the third failure opened the breaker: the hop says so
    assert [(hop.handler, hop.outcome, hop.attempts) for hop in first.hops] == [
        ("primary", "breaker_open", 3), ("backup", "ok", 1),
    ]  # fmt: skip
    assert h.embedder.calls == ["emb-a"] * 3 + ["emb-b"]
    second = h.call("two").result
    assert [(hop.handler, hop.outcome) for hop in second.hops] == [("primary", "breaker_open"), ("backup", "ok")]
    assert h.embedder.calls.count("emb-a") == 3


def test_a_client_error_ends_the_chain_at_once():
    h = Harness()
    h.embedder.script["emb-a"] = [ProviderError(ErrorClass.BAD_REQUEST, "bad dimensions", status=400)]
    with pytest.raises(FallbackExhausted) as exhausted:
        h.call()
    assert exhausted.value.last_error.status == 400 and h.embedder.calls == ["emb-a"]
    assert h.budget.released == [0] and not h.budget.settled


def test_a_refused_budget_is_neither_downgraded_nor_handed_to_a_human():
    h = Harness()
    h.budget.limit_tokens, h.budget.cheaper_model = 5, "emb-cheap"
    with pytest.raises(BudgetExceeded):
        h.call()
    assert h.embedder.calls == [] and len(h.budget.reserved) == 0


def test_the_exact_cache_answers_the_same_request_at_no_cost():
    h = Harness(cache=TwoLevelCache(None, CacheSpec("llm", 60, 10)))
    first = h.call(["a"], cache=True).result
    hit = h.call(["a"], cache=True).result
    assert (hit.handler, hit.cache_hit, hit.input_tokens, hit.raw) == ("cache", True, 0, first.raw)
    assert h.embedder.calls == ["emb-a"]
    assert h.usage.records[-1]["cache_hit"] and h.usage.records[-1]["input_tokens"] == 0
    assert not h.call(["b"], cache=True).result.cache_hit
    other = EmbeddingsRequest(input=["a"], model="emb-a", metadata={"cache_scope": "another agent"})
    assert not guarded_embeddings(other, deps=h.deps, route=ROUTE, cache=True).result.cache_hit


def test_a_provider_that_cannot_embed_is_skipped():
    h = Harness()
    route = Route("embeddings", (Target("chat-only", "gpt-4o"), Target("fake", "emb-b")))
    h.deps.providers = {"fake": h.embedder, "chat-only": ScriptedProvider(h.clock)}
    result = h.call(route=route).result
    assert [(hop.outcome, hop.reason) for hop in result.hops] == [("no_provider", "no_embeddings"), ("ok", None)]
    assert result.model == "emb-b-v2"


def test_the_simulated_provider_embeds_offline():
    request = EmbeddingsRequest(input=["a", [1, 2]], model="text-embedding-3-small", extra={"dimensions": 8})
    result = SimulatedProvider().embed(request, 1.0)
    assert [len(item["embedding"]) for item in result.raw["data"]] == [8, 8] and result.input_tokens == 3


def test_the_openai_provider_posts_the_body_as_it_is_and_checks_one_vector_per_input():
    answer = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": "AAAAAA=="}],
              "model": "text-embedding-3-small", "usage": {"prompt_tokens": 2, "total_tokens": 2}}  # fmt: skip
    edge = Edge(httpx2.Response(200, json=answer), httpx2.Response(200, json={**answer, "data": []}))
    provider = edge.provider()
    request = EmbeddingsRequest(input="hi", model="text-embedding-3-small", extra={"encoding_format": "base64"})
    result = provider.embed(request, 1.0)
    assert json.loads(edge.requests[0].content) == {
        "model": "text-embedding-3-small", "input": "hi", "encoding_format": "base64",
    }  # fmt: skip
    assert edge.requests[0].url.path == "/v1/embeddings"
    assert (result.model, result.input_tokens, result.raw) == ("text-embedding-3-small", 2, answer)
    assert json.loads(result.content) == answer
    with pytest.raises(ProviderError) as malformed:
        provider.embed(request, 1.0)
    assert malformed.value.error_class is ErrorClass.INVALID_RESPONSE
