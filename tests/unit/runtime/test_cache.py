"""Two-level cache: memory LRU then a real Redis; TTLs, size bound, Redis down, key canonicalisation."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from agentops.observability.metrics import CACHE_REQUESTS
from agentops.runtime.cache import CACHE_SPECS, CacheHit, CacheSpec, TwoLevelCache, cache_key
from agentops.runtime.config import RuntimeConfig
from tests.fixtures.runtime import FakeClock


def counts(name: str) -> dict[str, float]:
    return {r: CACHE_REQUESTS.labels(cache=name, result=r)._value.get() for r in ("hit_memory", "hit_redis", "miss")}


def delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


ANSWER = {"content": "Mock answer to: hi — é", "usage": {"prompt_tokens": 3, "completion_tokens": 5}}


def test_specs_follow_the_seed():
    """The seed's caches: llm_responses 1 h / 1,000, tool_results 30 min / 500, user_profiles 24 h / 100."""
    assert CACHE_SPECS["llm_responses"] == CacheSpec("llm_responses", 3600, 1000)
    assert CACHE_SPECS["tool_results"] == CacheSpec("tool_results", 1800, 500)
    assert CACHE_SPECS["user_profiles"] == CacheSpec("user_profiles", 86400, 100)
    assert RuntimeConfig().caches == CACHE_SPECS  # what the guard and ctx.cache use unless an admin changes it


def test_a_spec_source_changes_ttl_and_size_live(redis_client):
    """What an admin's edit of the runtime settings does to a running process's cache."""
    clock = FakeClock()
    current = {"spec": CacheSpec("t_live", 60, 3)}
    cache = TwoLevelCache(redis_client, CacheSpec("t_live", 60, 3), clock=clock, spec_source=lambda: current["spec"])
    for n in range(5):
        cache.set(f"k{n}", n)
    assert len(cache) == 3
    current["spec"] = CacheSpec("whatever", 10, 2)  # the name stays the cache's (metric label, Redis prefix)
    cache.set("k5", 5)
    assert len(cache) == 2 and cache.spec == CacheSpec("t_live", 10, 2)
    assert 9_000 < redis_client.pttl(cache.redis_key("k5")) <= 10_000  # the new TTL, in Redis too
    clock.advance(11)
    assert "k5" in cache._memory and cache._memory["k5"][0] == 10  # the memory entry expired at the new TTL


def test_cache_key_is_canonical():
    a = cache_key("llm", {"model": "m", "messages": [{"role": "user", "content": "é"}], "temperature": 0})
    b = cache_key("llm", {"temperature": 0, "messages": [{"content": "é", "role": "user"}], "model": "m"})
    assert a == b
    expected = '{"messages":[{"content":"é","role":"user"}],"model":"m","temperature":0}'
    assert a == "llm:" + hashlib.sha256(expected.encode()).hexdigest()
    assert cache_key("tool", {"model": "m"}) != cache_key("llm", {"model": "m"})
    assert cache_key("llm", {"model": "m", "temperature": 0}) != cache_key("llm", {"model": "m", "temperature": 1})


def test_miss_then_set_then_memory_hit(redis_client):
    cache = TwoLevelCache(redis_client, CacheSpec("t_basic", 60, 10))
    key = cache_key("llm", {"q": 1})
    before = counts("t_basic")
    assert cache.get(key) is None
    cache.set(key, ANSWER)
    hit = cache.get(key)
    assert hit == CacheHit(ANSWER, "memory")
    assert delta(counts("t_basic"), before) == {"miss": 1, "hit_memory": 1}
    assert redis_client.get(cache.redis_key(key)) is not None


def test_another_process_hits_redis_and_backfills_memory(redis_client):
    spec = CacheSpec("t_shared", 60, 10)
    key = cache_key("llm", {"q": 2})
    TwoLevelCache(redis_client, spec).set(key, ANSWER)
    other = TwoLevelCache(redis_client, spec)  # a fresh process: empty memory
    before = counts("t_shared")
    assert other.get(key) == CacheHit(ANSWER, "redis")
    assert other.get(key) == CacheHit(ANSWER, "memory")
    assert delta(counts("t_shared"), before) == {"hit_redis": 1, "hit_memory": 1}


def test_hits_are_fresh_copies(redis_client):
    cache = TwoLevelCache(redis_client, CacheSpec("t_copy", 60, 10))
    cache.set("k", {"list": [1, 2]})
    cache.get("k").value["list"].append(3)
    assert cache.get("k").value == {"list": [1, 2]}


def test_ttl_memory_by_clock_and_redis_by_expiry(redis_client):
    clock = FakeClock(start=500.0)
    spec = CacheSpec("t_ttl", 10, 10)
    cache = TwoLevelCache(redis_client, spec, clock=clock)
    cache.set("k", "v")
    assert 9_000 < redis_client.pttl(cache.redis_key("k")) <= 10_000
    clock.now += 9.9
    assert cache.get("k").source == "memory"
    clock.now += 0.2  # memory entry expired; Redis (real time) still has it
    assert cache.get("k").source == "redis"
    # The backfilled memory entry lives only as long as the Redis entry has left (≈ 10 s, not a fresh 10 s
    # from now on the fake clock plus the real time spent).
    clock.now += 9.5
    assert cache.get("k").source == "memory"
    clock.now += 0.6
    assert cache.get("k").source == "redis"


def test_redis_entry_really_expires(redis_client):
    spec = CacheSpec("t_expire", 0.2, 10)
    cache = TwoLevelCache(redis_client, spec)
    cache.set("k", "v")
    time.sleep(0.25)
    assert cache.get("k") is None
    assert redis_client.exists(cache.redis_key("k")) == 0


def test_memory_is_a_bounded_lru(redis_client):
    cache = TwoLevelCache(redis_client, CacheSpec("t_lru", 60, 3))
    for k in "abc":
        cache.set(k, k)
    assert cache.get("a").source == "memory"  # a is now the most recently used
    cache.set("d", "d")  # evicts b, the least recently used
    assert len(cache) == 3
    assert cache.get("b") == CacheHit("b", "redis")  # still shared; comes back into memory, evicting c
    assert cache.get("a").source == "memory"
    assert cache.get("d").source == "memory"
    assert cache.get("c").source == "redis"


def test_delete_and_clear_memory(redis_client):
    cache = TwoLevelCache(redis_client, CacheSpec("t_del", 60, 10))
    cache.set("k", 1)
    cache.clear_memory()
    assert cache.get("k").source == "redis"
    cache.delete("k")
    assert cache.get("k") is None


def test_redis_down_is_a_miss_and_never_raises(dead_redis_client):
    cache = TwoLevelCache(dead_redis_client, CacheSpec("t_down", 60, 10))
    before = counts("t_down")
    assert cache.get("k") is None
    cache.set("k", {"a": 1})  # stored in memory, Redis skipped
    assert cache.get("k") == CacheHit({"a": 1}, "memory")
    cache.delete("k")
    assert cache.get("k") is None
    assert delta(counts("t_down"), before) == {"miss": 2, "hit_memory": 1}


def test_without_redis_at_all():
    cache = TwoLevelCache(None, CacheSpec("t_none", 60, 10))
    cache.set("k", [1])
    assert cache.get("k") == CacheHit([1], "memory")


def test_values_must_be_json(redis_client):
    cache = TwoLevelCache(redis_client, CacheSpec("t_json", 60, 10))
    with pytest.raises(TypeError):
        cache.set("k", object())


def test_thread_safe_under_contention(redis_client):
    cache = TwoLevelCache(None, CacheSpec("t_threads", 60, 50))
    errors = []

    def worker(n: int) -> None:
        try:
            for i in range(2000):
                key = f"k{(i * 7 + n) % 120}"
                if cache.get(key) is None:
                    cache.set(key, i)
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(cache) <= 50


def test_memory_hit_is_fast(redis_client):
    cache = TwoLevelCache(redis_client, CACHE_SPECS["llm_responses"])
    key = cache_key("llm", {"model": "m", "messages": [{"role": "user", "content": "x" * 200}]})
    cache.set(key, {**ANSWER, "content": "y" * 2000})
    n = 5000
    t0 = time.perf_counter()
    for _ in range(n):
        cache.get(key)
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 0.0001, f"{per_call * 1e6:.1f} µs per memory hit"


def test_background_set_fills_memory_now_and_redis_off_the_callers_thread(redis_client):
    spec = CacheSpec("t_background", 60, 10)
    cache = TwoLevelCache(redis_client, spec)
    key = cache_key("llm", {"q": "background"})
    threads = []
    real_set, real_pipeline = redis_client.set, redis_client.pipeline
    redis_client.set = lambda *a, **k: threads.append(("set", threading.current_thread().name)) or real_set(*a, **k)
    redis_client.pipeline = lambda *a, **k: (
        threads.append(("pipeline", threading.current_thread().name)) or real_pipeline(*a, **k)
    )
    try:
        cache.set(key, ANSWER, background=True)
        assert cache.get(key) == CacheHit(ANSWER, "memory")  # this process hits at once
        cache.flush()
    finally:
        del redis_client.set, redis_client.pipeline
    # get() answered from memory (no look-up); the one Redis round trip was the writer thread's pipeline.
    assert threads == [("pipeline", "agentops-cache-t_background")]
    other = TwoLevelCache(redis_client, spec)  # another process, after the write
    assert other.get(key) == CacheHit(ANSWER, "redis")
    ttl = redis_client.pttl(cache.redis_key(key))
    assert 0 < ttl <= 60_000
    with pytest.raises(TypeError):
        cache.set(key, {"not json": object()}, background=True)  # still raised to the caller


def test_background_set_with_redis_down_or_absent_never_raises(dead_redis_client):
    key = cache_key("llm", {"q": "down"})
    for client in (dead_redis_client, None):
        cache = TwoLevelCache(client, CacheSpec("t_background_down", 60, 10))
        cache.set(key, ANSWER, background=True)
        cache.flush()
        assert cache.get(key) == CacheHit(ANSWER, "memory")
