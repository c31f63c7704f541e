"""Cache hit latency of ``TwoLevelCache`` (the "llm" spec), memory level and Redis level.

- memory hit: ``cache.get(key)`` answered from the in-process LRU, vs a plain ``dict`` lookup of the same
  value (the ratio is the wrapper's cost: lock, LRU bookkeeping, TTL check, JSON decode, metric);
- Redis hit: ``cache.get(key)`` with the memory level cleared before every call (outside the timed part),
  vs a raw ``redis.get`` of the same Redis key on the same client (the ratio is the GET+PTTL pipeline, JSON
  decode, the copy into memory and the metric).

Each sample is one call timed with ``perf_counter_ns``; figures are in microseconds (the dict baseline is
far below what three decimals of a millisecond can show).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable

import redis

from agentops.runtime.cache import CACHE_SPECS, TwoLevelCache
from agentops.runtime.guard import llm_cache_key
from agentops.runtime.providers import LLMRequest
from tests.bench.harness import Result, interleaved, median_of_rounds
from tests.fixtures.runtime import fail_fast_redis

PREFIX = "agentops:bench:cache:"  # every Redis key of this benchmark; deleted before and after
MEMORY_ROUNDS, MEMORY_SAMPLES = 10, 20_000
REDIS_ROUNDS, REDIS_SAMPLES = 8, 2_000

# A typical cached answer (the shape guard._to_cache stores): ~100 words of text plus its metadata.
VALUE = {
    "text": " ".join(["The quick brown fox jumps over the lazy dog."] * 11),
    "model": "gpt-4o-mini",
    "provider": "openai",
    "finish_reason": "stop",
    "tool_calls": None,
    "input_tokens": 42,
    "output_tokens": 130,
}
REQUEST = LLMRequest(
    [{"role": "user", "content": "Is this review positive? 'Great product, arrived on time.'"}],
    operation="classify",
    model="gpt-4o-mini",
    max_tokens=16,
)


def run() -> list[Result]:
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        raise RuntimeError("REDIS_URL is not set (run through `make bench` / agentops.devtools.launch bench)")
    client = fail_fast_redis(redis_url)
    _delete_bench_keys(client)
    try:
        return _measure(client)
    finally:
        _delete_bench_keys(client)
        client.close()


def _measure(client: redis.Redis) -> list[Result]:
    cache = TwoLevelCache(client, CACHE_SPECS["llm_responses"], key_prefix=PREFIX)
    key = llm_cache_key(REQUEST)
    cache.set(key, VALUE)
    redis_key = cache.redis_key(key)
    plain = {key: VALUE}
    wrong: list[str] = []

    def memory_hit():
        return cache.get(key)

    def dict_lookup():
        return plain.get(key)

    def raw_get():
        return client.get(redis_key)

    def expect(source: str) -> Callable[[object], None]:
        def check(hit) -> None:
            if getattr(hit, "source", None) != source:
                wrong.append(f"{source}: {hit!r}")

        return check

    def present(value) -> None:
        if value is None:
            wrong.append("missing")

    for _ in range(2_000):  # warm up (connection, code paths)
        memory_hit()
        dict_lookup()
    for _ in range(200):
        cache.clear_memory()
        memory_hit()
        raw_get()

    results = []
    subject, baseline = interleaved(
        MEMORY_ROUNDS,
        _sampler(memory_hit, MEMORY_SAMPLES, check=expect("memory")),
        _sampler(dict_lookup, MEMORY_SAMPLES, check=present),
    )
    results.append(_row("cache: memory hit p50 (vs dict lookup)", subject, baseline, "p50 <= 200 us (0.2 ms)", 200))
    subject, baseline = interleaved(
        REDIS_ROUNDS,
        _sampler(memory_hit, REDIS_SAMPLES, before=cache.clear_memory, check=expect("redis")),
        _sampler(raw_get, REDIS_SAMPLES, before=cache.clear_memory, check=present),
    )
    results.append(_row("cache: Redis hit p50 (vs raw redis GET)", subject, baseline, "p50 <= 2000 us (2 ms)", 2000))
    if wrong:
        raise RuntimeError(f"{len(wrong)} look-ups did not hit the expected level, e.g. {wrong[:3]}")
    return results


def _sampler(
    call: Callable[[], object],
    samples: int,
    *,
    check: Callable[[object], None],
    before: Callable[[], None] | None = None,
) -> Callable[[], list[float]]:
    """One round: `samples` calls, each timed alone in µs; `before` runs ahead of and `check` on the answer
    of every call, both outside the timed part."""

    def one_round() -> list[float]:
        clock = time.perf_counter_ns
        out = []
        gc.collect()
        for _ in range(samples):
            if before is not None:
                before()
            started = clock()
            answer = call()
            out.append((clock() - started) / 1000)
            check(answer)
        return out

    return one_round


def _row(name: str, subject: list[list[float]], baseline: list[list[float]], goal: str, limit_us: float) -> Result:
    p50, base50 = median_of_rounds(subject), median_of_rounds(baseline)
    return Result(
        name,
        "us",
        p50,
        base50,
        goal,
        p50 <= limit_us,
        p95=median_of_rounds(subject, 95),
        baseline_p95=median_of_rounds(baseline, 95),
        note=f"{len(subject)} rounds x {len(subject[0])} samples each, interleaved with the baseline",
    )


def _delete_bench_keys(client: redis.Redis) -> None:
    keys = list(client.scan_iter(match=PREFIX + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.unlink(*keys[start : start + 500])
