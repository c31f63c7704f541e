"""The semantic cache: the offline embedder, the partition, the look-alike guard rails, and the guard hook
(paraphrase hits, look-alikes and other partitions miss, near misses noted, Redis shared and optional)."""

from __future__ import annotations

import pytest

from agentops.observability.metrics import SEMANTIC_CACHE
from agentops.runtime.cache import CacheSpec, TwoLevelCache
from agentops.runtime.config import RuntimeConfig, StaticConfigSource
from agentops.runtime.guard import GuardDeps, guarded_llm
from agentops.runtime.protocols import RecordingUsageSink
from agentops.runtime.providers import LLMRequest
from agentops.runtime.providers.simulated import simulated_embedding
from agentops.runtime.routing import Route, SemanticSettings, Target
from agentops.runtime.semantic_cache import SemanticCache, semantic_headers
from agentops.runtime.semantic_text import offline_embedding, partition_key, question_of, same_facts, signature
from tests.fixtures.runtime import FakeClock, ScriptedProvider


def sim(a: str, b: str) -> float:
    return float(offline_embedding(a) @ offline_embedding(b))


def facts(a: str, b: str) -> bool:
    return same_facts(signature(a), signature(b))


def test_offline_embedder_puts_rewordings_close_and_other_questions_far():
    assert sim("What is the capital of France?", "what's the capital of France") > 0.99
    assert sim("How do I reset my password?", "How can I reset my password") > 0.92
    assert sim("What is the capital of France?", "Tell me the capital of France, please.") > 0.92
    assert sim("Summarize the quarterly report", "Write a poem about autumn leaves") < 0.3


def test_the_mock_embeddings_treat_synonyms_as_one_word():
    def cos(a, b):
        return sum(x * y for x, y in zip(simulated_embedding("m", a), simulated_embedding("m", b), strict=True))

    assert cos("Please reimburse my purchase", "please refund my order") > 0.99
    assert cos("Please refund my order", "Write a poem about autumn") < 0.3


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Refund order 1234", "Refund order 1235"),
        ("Should I do it?", "Should I not do it?"),
        ("Should I do it?", "Should I never do it?"),
        ("Is Paris in Europe?", "Is Berlin in Europe?"),
        ("Paris is lovely in spring?", "Berlin is lovely in spring?"),
        ("Translate 'good morning' into Spanish", "Translate 'good night' into Spanish"),
    ],
)
def test_look_alikes_never_share_facts(a, b):
    assert not facts(a, b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Refund order 1,234", "please refund order 1234"),
        ("I don't want it", "I do not want it"),
        ("What is the capital of France?", "tell me France's capital"),
    ],
)
def test_paraphrases_share_facts(a, b):
    assert facts(a, b)


def test_the_question_is_the_last_user_text_only():
    assert question_of([{"role": "user", "content": "hi there"}]) == "hi there"
    assert question_of([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert question_of([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]) is None
    assert question_of([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) is None
    assert question_of([]) is None


def test_the_partition_is_everything_but_the_last_question():
    base = dict(
        scope="agent-a",
        operation="classify",
        model="m",
        route=["p:m"],
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "one"}],
        max_tokens=100,
        temperature=0.0,
        extra={},
        embedder="offline-v1",
    )
    key = partition_key(**base)
    assert partition_key(**{**base, "messages": [base["messages"][0], {"role": "user", "content": "two"}]}) == key
    for change in (
        {"scope": "agent-b"},
        {"messages": [{"role": "system", "content": "be long"}, {"role": "user", "content": "one"}]},
        {"extra": {"tools": [{"type": "function", "function": {"name": "f"}}]}},
        {"extra": {"response_format": {"type": "json_object"}}},
        {"temperature": 0.9},
        {"model": "other"},
        {"embedder": "model:e"},
    ):
        assert partition_key(**{**base, **change}) != key, change
    assert partition_key(**{**base, "temperature": 0.3}) == partition_key(**{**base, "temperature": 0.5})


# --- through the guard -----------------------------------------------------------------------------

SEMANTIC_ROUTE = Route("classify", (Target("fake", "small"),), semantic=SemanticSettings("classify", 0.92, 60.0))
CONFIG = RuntimeConfig(routes=(SEMANTIC_ROUTE,), default_chain=(Target("fake", "small"),))


class Pipeline:
    def __init__(self, redis_client, semantic: SemanticCache | None = None) -> None:
        self.clock = FakeClock(start=1000.0)
        self.provider = ScriptedProvider(self.clock, answer="answer {n}")
        self.count = 0
        original = self.provider.complete

        def complete(request, timeout):
            self.count += 1
            self.provider.answer = f"answer {self.count} from {{model}}"
            return original(request, timeout)

        self.provider.complete = complete
        self.usage = RecordingUsageSink()
        self.deps = GuardDeps(
            config=StaticConfigSource(CONFIG),
            providers={"fake": self.provider},
            cache=TwoLevelCache(None, CacheSpec("t_semantic", 60, 100)),
            usage=self.usage,
            clock=self.clock,
            semantic=semantic or SemanticCache(redis_client, refresh_seconds=0),
        )

    def ask(self, text: str, *, agent="a", system="be brief", operation="classify", defer=None, **kw):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
        request = LLMRequest(
            messages=messages,
            operation=operation,
            temperature=0,
            metadata={"agent": agent, "cache_scope": agent},
            **kw,
        )
        return guarded_llm(request, deps=self.deps, defer=defer)


def counts(route="classify"):
    return {r: SEMANTIC_CACHE.labels(route=route, result=r)._value.get() for r in ("hit", "lookalike", "near_miss")}


def test_a_paraphrase_is_answered_from_the_cache_at_no_cost(redis_client):
    pipe = Pipeline(redis_client)
    before = counts()
    first = pipe.ask("How do I reset my password?")
    again = pipe.ask("how can I reset my password")
    assert pipe.count == 1
    assert again.text == first.text and again.cache_hit and again.input_tokens == again.output_tokens == 0
    assert again.hops[0].handler == "semantic_cache" and again.hops[0].reason.startswith("similarity 0.9")
    assert semantic_headers(again, True)[0] == (b"x-agentops-cache", b"semantic-hit")
    assert pipe.usage.records[-1]["cache_hit"] is True and pipe.usage.records[-1]["input_tokens"] == 0
    assert counts()["hit"] == before["hit"] + 1


def test_look_alikes_and_other_partitions_go_upstream(redis_client):
    pipe = Pipeline(redis_client)
    before = counts()
    pipe.ask("Refund order 1234 please")
    pipe.ask("Refund order 1235 please")  # close vectors, another number
    pipe.ask("Refund order 1234 please", agent="b")  # another agent
    pipe.ask("Refund order 1234 please", system="be long")  # another system prompt
    pipe.ask("Refund order 1234 please", extra={"tools": [{"type": "function", "function": {"name": "refund"}}]})
    assert pipe.count == 5
    assert counts()["lookalike"] == before["lookalike"] + 1


def test_a_route_without_opt_in_never_asks(redis_client):
    pipe = Pipeline(redis_client)
    pipe.deps.config.set(CONFIG.replace(routes=(Route("classify", SEMANTIC_ROUTE.chain),)))
    pipe.ask("How do I reset my password?")
    pipe.ask("how can I reset my password")
    assert pipe.count == 2


def test_a_near_miss_is_noted_on_the_answer(redis_client):
    pipe = Pipeline(redis_client)
    strict = Route("classify", SEMANTIC_ROUTE.chain, semantic=SemanticSettings("classify", 0.84, 60.0))
    pipe.deps.config.set(CONFIG.replace(routes=(strict,)))
    before = counts()
    pipe.ask("How do I reset my password?")
    near = pipe.ask("How do I reset my password quickly?")  # similarity ~0.82: within 0.05 under 0.84
    assert pipe.count == 2 and not near.cache_hit
    assert near.hops[0].handler == "semantic_cache" and near.hops[0].outcome == "near_miss"
    assert near.hops[0].reason.endswith("< 0.840")
    assert counts()["near_miss"] == before["near_miss"] + 1


def test_another_process_sees_the_entry_through_redis(redis_client):
    Pipeline(redis_client).ask("How do I reset my password?")
    other = Pipeline(redis_client)  # a fresh process: empty memory
    assert other.ask("how can I reset my password").cache_hit and other.count == 0


def test_redis_away_is_a_miss_never_an_error(dead_redis_client, redis_client):
    pipe = Pipeline(redis_client, SemanticCache(dead_redis_client, refresh_seconds=0))
    pipe.ask("How do I reset my password?")
    assert pipe.ask("how can I reset my password").cache_hit  # this process's own entry
    assert (
        Pipeline(redis_client, SemanticCache(dead_redis_client)).ask("how can I reset my password").cache_hit is False
    )


def test_a_fresh_answer_is_found_before_its_deferred_publish_reaches_redis(redis_client):
    pipe = Pipeline(redis_client)  # refresh_seconds=0: every look-up asks Redis for the partition's version
    later: list = []
    pipe.ask("How do I reset my password?", defer=later.append)
    assert later  # the Redis write waits for the gateway's after-answer work
    assert pipe.ask("how can I reset my password").cache_hit and pipe.count == 1  # not dropped by the re-read
    for work in later:
        work()
    other = Pipeline(redis_client)
    assert other.ask("how can I reset my password").cache_hit and other.count == 0
