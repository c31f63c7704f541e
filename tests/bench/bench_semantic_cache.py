"""The semantic cache: hit latency and the cost a replayed workload saves, with no false hit.

- hit latency: ``guarded_llm`` answering a paraphrase from the semantic cache (exact miss, offline embedding,
  the partition's version GET in Redis, the numpy scan, the guard rails) vs ``guarded_llm`` on a question
  nobody asked before (exact miss, semantic miss, then the upstream: ``OpenAICompatProvider`` to the mock
  under uvicorn), same deps, interleaved rounds; p50 in ms.
- cost: 200 requests replayed (50 new questions, 50 exact repeats, 50 paraphrases, 50 look-alikes — another
  number, a negation or another name —, shuffled with a fixed seed) through the guard with both caches vs
  with no cache; tokens charged (the ledger's input + output). A false hit is a cache answer whose question
  is not the one (or a paraphrase of the one) that produced it: the goal is none.
"""

from __future__ import annotations

import itertools
import os
import random
import time

import redis

from agentops.runtime.cache import CACHE_SPECS, TwoLevelCache
from agentops.runtime.config import RuntimeConfig, StaticConfigSource
from agentops.runtime.guard import GuardDeps, guarded_llm
from agentops.runtime.protocols import RecordingUsageSink
from agentops.runtime.providers import LLMRequest, OpenAICompatProvider
from agentops.runtime.routing import Route, SemanticSettings, Target
from agentops.runtime.semantic_cache import SemanticCache
from tests.bench.bench_guard import ROOT, _logs_to, _mock_openai
from tests.bench.harness import Result, interleaved, median_of_rounds
from tests.fixtures.runtime import fail_fast_redis

PREFIX = "agentops:bench:semcache:"
MODEL, OPERATION = "mock-small", "faq"
OTHER_SYSTEM = {"role": "system", "content": "You are the gift desk of an online shop."}
ROUNDS, SAMPLES = 6, 60
SYSTEM = {"role": "system", "content": "You are the support desk of an online shop. Answer in two sentences."}

# (question, a paraphrase the offline embedder should match, a look-alike that must not hit); {n} a number,
# {m} the next one.
TEMPLATES = [
    ("How do I reset the password of account {n}?", "how can I reset the password of account {n}",
     "How do I not reset the password of account {n}?"),
    ("Where is my order {n}?", "where's my order {n}", "Where is my order {m}?"),
    ("Can I return the shoes from order {n}?", "could I return the shoes from order {n} please",
     "Can I not return the shoes from order {n}?"),
    ("What is the delivery time to Paris for order {n}?", "what's the delivery time to Paris for order {n}",
     "What is the delivery time to Berlin for order {n}?"),
    ("Please cancel my subscription {n}.", "cancel my subscription {n}, please", "Please cancel my subscription {m}."),
    ("Is the jacket from order {n} waterproof?", "is the jacket from order {n} waterproof",
     "Is the jacket from order {n} not waterproof?"),
    ("How much is shipping to London for order {n}?", "how much is the shipping to London for order {n}?",
     "How much is shipping to Dublin for order {n}?"),
    ("Why was my card charged twice for order {n}?", "why was my card charged twice for order {n}",
     "Why was my card charged twice for order {m}?"),
    ("Do you ship order {n} on weekends?", "do you ship order {n} at weekends?", "Do you never ship order {n} on weekends?"),
    ("Can I change the address of order {n}?", "can I change the address of order {n}",
     "Can I change the address of order {m}?"),
]  # fmt: skip


def workload() -> list[tuple[str, str]]:
    """200 ``(question, truth)`` pairs: ``truth`` names the question whose answer is the right one."""
    items = []
    for index in range(50):
        question, paraphrase, other = TEMPLATES[index % len(TEMPLATES)]
        n = 1000 + index * 7
        truth = question.format(n=n)
        other = other.format(n=n, m=n + 1)
        items += [(truth, truth), (truth, truth), (paraphrase.format(n=n), truth), (other, other)]
    random.Random(19).shuffle(items)
    return items


def run() -> list[Result]:
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        raise RuntimeError("REDIS_URL is not set (run through `make bench` / agentops.devtools.launch bench)")
    client = fail_fast_redis(redis_url)
    _delete(client)
    try:
        with _mock_openai() as base_url, _logs_to(ROOT / ".run" / "bench" / "bench_semantic_cache.log"):
            return _measure(client, base_url)
    finally:
        _delete(client)
        client.close()


def _deps(client: redis.Redis, base_url: str, *, caches: bool, tag: str) -> GuardDeps:
    semantic = SemanticSettings(OPERATION, 0.92, 3600.0)
    route = Route(OPERATION, (Target("mock", MODEL),), use_rules=False, use_human=False, semantic=semantic)
    config = RuntimeConfig(routes=(route,), default_chain=route.chain, cacheable_operations=frozenset({OPERATION}))
    return GuardDeps(
        config=StaticConfigSource(config),
        providers={"mock": OpenAICompatProvider("mock", base_url, "bench")},
        cache=TwoLevelCache(client, CACHE_SPECS["llm_responses"], key_prefix=f"{PREFIX}{tag}:") if caches else None,
        semantic=SemanticCache(client, key_prefix=f"{PREFIX}{tag}:s:") if caches else None,
        usage=RecordingUsageSink(),
    )


def _ask(deps: GuardDeps, text: str, system: dict = SYSTEM):
    request = LLMRequest(
        [system, {"role": "user", "content": text}],
        operation=OPERATION,
        model=MODEL,
        max_tokens=60,
        temperature=0,
        metadata={"agent": "bench", "cache_scope": "bench"},
    )
    return guarded_llm(request, deps=deps)


def _measure(client: redis.Redis, base_url: str) -> list[Result]:
    results = [_latency(client, base_url)]
    results += _replay(client, base_url)
    return results


def _latency(client: redis.Redis, base_url: str) -> Result:
    deps = _deps(client, base_url, caches=True, tag="latency")
    _ask(deps, "How do I reset the password of account 4242?")
    paraphrase = "how can I reset the password of account 4242"
    fresh = itertools.count()
    wrong: list[str] = []

    def hits() -> list[float]:
        samples = []
        for _ in range(SAMPLES):
            start = time.perf_counter()
            result = _ask(deps, paraphrase)
            samples.append((time.perf_counter() - start) * 1000)
            if not (result.cache_hit and result.hops[0].handler == "semantic_cache"):
                wrong.append("hit path missed")
        return samples

    def misses() -> list[float]:
        samples = []
        for _ in range(SAMPLES):
            text = f"Question {next(fresh)} that nobody asked: is gift wrapping free for order {next(fresh)}?"
            start = time.perf_counter()
            result = _ask(deps, text, OTHER_SYSTEM)  # its own partition, full (256): the paraphrase stays
            samples.append((time.perf_counter() - start) * 1000)
            if result.cache_hit:
                wrong.append("miss path hit")
        return samples

    hits(), misses()  # warm up: connections, the Lua script, numpy
    subject, baseline = interleaved(ROUNDS, hits, misses)
    value, base = median_of_rounds(subject), median_of_rounds(baseline)
    return Result(
        "semantic cache: hit p50 vs upstream miss",
        "ms",
        value,
        base,
        "ratio <= 0.50",
        value <= 0.5 * base and not wrong,
        p95=median_of_rounds(subject, 95),
        baseline_p95=median_of_rounds(baseline, 95),
        note="; ".join(sorted(set(wrong))),
    )


def _replay(client: redis.Redis, base_url: str) -> list[Result]:
    items = workload()
    with_cache = _deps(client, base_url, caches=True, tag="replay")
    without = _deps(client, base_url, caches=False, tag="none")
    produced: dict[str, str] = {}  # an answer's text → the question that produced it upstream
    kinds = {"exact": 0, "semantic": 0, "false": 0, "upstream": 0}
    for question, truth in items:
        _ask(without, question)  # the no-cache side pays for every request
        result = _ask(with_cache, question)
        if not result.cache_hit:
            kinds["upstream"] += 1
            produced[result.text] = truth
            continue
        kinds["semantic" if result.hops[0].handler == "semantic_cache" else "exact"] += 1
        if produced.get(result.text) != truth:
            kinds["false"] += 1
    cost, baseline = _tokens(with_cache), _tokens(without)
    note = (
        f"{len(items)} requests: {kinds['upstream']} upstream, {kinds['exact']} exact hits, "
        f"{kinds['semantic']} semantic hits, {kinds['false']} false hits; saved {1 - cost / baseline:.0%}"
    )
    share = kinds["semantic"] / len(items)
    return [
        Result(
            "semantic cache: tokens charged, 200 replayed requests",
            "tokens",
            cost,
            baseline,
            "ratio <= 0.65, 0 false",
            cost <= 0.65 * baseline and kinds["false"] == 0,
            note=note,
        ),
        Result(
            "semantic cache: answered by meaning (paraphrases 0.25)",
            "share",
            share,
            0.25,  # the paraphrases' share of the workload
            "ratio >= 0.80, 0 false",
            share >= 0.8 * 0.25 and kinds["false"] == 0,
            note=note,
        ),
    ]


def _tokens(deps: GuardDeps) -> float:
    return float(sum(r["input_tokens"] + r["output_tokens"] for r in deps.usage.records))


def _delete(client: redis.Redis) -> None:
    for key in client.scan_iter(PREFIX + "*", count=1000):
        client.delete(key)
