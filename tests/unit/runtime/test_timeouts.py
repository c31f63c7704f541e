"""Timeouts: layered defaults, deadlines, and adaptive timeouts learnt through a real Redis."""

from __future__ import annotations

import math
import pickle

import pytest

from agentops.runtime.timeouts import (
    LAYERED_DEFAULTS,
    STEP_DEFAULTS,
    AdaptiveSettings,
    AdaptiveTimeouts,
    Deadline,
    TimeoutExceeded,
    p95,
)
from tests.fixtures.runtime import FakeClock


def test_seed_defaults():
    assert LAYERED_DEFAULTS == {"llm": 30.0, "tool": 60.0, "request": 300.0, "human": 600.0}
    assert STEP_DEFAULTS == {
        "planning": 15.0,
        "tool_search": 10.0,
        "tool_execution": 45.0,
        "response_generation": 20.0,
    }
    assert AdaptiveSettings() == AdaptiveSettings(window=100, min_samples=5, multiplier=1.5, floor=10.0, ceiling=120.0)


def test_deadline_math():
    clock = FakeClock(start=100.0)
    d = Deadline.after(10, clock=clock)
    assert d.remaining() == 10
    assert not d.expired
    clock.now += 4
    assert d.remaining() == pytest.approx(6)
    assert d.cap(30) == pytest.approx(6)
    assert d.cap(3) == 3
    d.check("request")
    clock.now += 7
    assert d.remaining() == 0
    assert d.expired
    assert d.cap(30) == 0
    with pytest.raises(TimeoutExceeded) as info:
        d.check("request")
    assert (info.value.layer, info.value.seconds) == ("request", 300.0)


def test_deadline_without_limit_and_real_clock():
    d = Deadline.after(math.inf)
    assert d.remaining() == math.inf and not d.expired and d.cap(30) == 30
    real = Deadline.after(5)
    assert 4.9 < real.remaining() <= 5


def test_timeout_exceeded_carries_layer_and_pickles():
    exc = TimeoutExceeded("llm", 30.0)
    assert (exc.layer, exc.seconds) == ("llm", 30.0)
    assert "llm" in str(exc) and "30" in str(exc)
    copy = pickle.loads(pickle.dumps(exc))
    assert (copy.layer, copy.seconds) == ("llm", 30.0)


def test_p95_is_nearest_rank():
    assert p95([float(i) for i in range(1, 101)]) == 95.0
    assert p95([3.0, 1.0, 2.0]) == 3.0
    assert p95([7.0]) == 7.0


def fresh(redis_client, **settings) -> AdaptiveTimeouts:
    return AdaptiveTimeouts(redis_client, AdaptiveSettings(**settings), cache_seconds=0)


def test_needs_min_samples_before_adapting(redis_client):
    t = fresh(redis_client)
    for _ in range(4):
        t.record("planning", "gpt-4o", 20.0)
    assert t.timeout_for("planning", "gpt-4o", 15.0) == 15.0
    t.record("planning", "gpt-4o", 20.0)
    assert t.timeout_for("planning", "gpt-4o", 15.0) == 30.0  # p95 20 × 1.5


def test_p95_times_multiplier_clamped(redis_client):
    t = fresh(redis_client)
    for s in [4.0, 5.0, 6.0, 7.0, 8.0] * 4:
        t.record("mid", "m", s)
    assert t.timeout_for("mid", "m", 99) == 12.0  # 8 × 1.5
    for _ in range(10):
        t.record("fast", "m", 0.2)
    assert t.timeout_for("fast", "m", 99) == 10.0  # floor
    for _ in range(10):
        t.record("slow", "m", 200.0)
    assert t.timeout_for("slow", "m", 99) == 120.0  # ceiling


def test_keyed_by_operation_and_model(redis_client):
    t = fresh(redis_client)
    for _ in range(5):
        t.record("planning", "large", 40.0)
    assert t.timeout_for("planning", "large", 15.0) == 60.0
    assert t.timeout_for("planning", "small", 15.0) == 15.0
    assert t.timeout_for("classify", "large", 15.0) == 15.0


def test_only_the_last_window_counts(redis_client):
    t = fresh(redis_client, floor=0.0)
    for _ in range(100):
        t.record("op", "m", 100.0)
    for _ in range(100):
        t.record("op", "m", 2.0)
    assert redis_client.llen(t.key("op", "m")) == 100
    assert t.timeout_for("op", "m", 30.0) == 3.0
    t.record("op", "m", 50.0)
    assert redis_client.llen(t.key("op", "m")) == 100
    assert max(t.samples("op", "m")) == 50.0


def test_shared_between_instances(redis_client):
    worker_a = fresh(redis_client)
    worker_b = fresh(redis_client)
    for _ in range(6):
        worker_a.record("tool_search", "m", 16.0)
    assert worker_b.timeout_for("tool_search", "m", 10.0) == 24.0


def test_value_is_cached_in_process_for_about_a_second(redis_client):
    clock = FakeClock(start=100.0)
    reader = AdaptiveTimeouts(redis_client, clock=clock)
    writer = fresh(redis_client)
    assert reader.timeout_for("op", "m", 25.0) == 25.0
    for _ in range(5):
        writer.record("op", "m", 20.0)
    clock.now += 0.9
    assert reader.timeout_for("op", "m", 25.0) == 25.0  # still the cached "not enough samples"
    clock.now += 0.2
    assert reader.timeout_for("op", "m", 25.0) == 30.0  # 20 × 1.5
    writer.record("op", "m", 60.0)
    writer.record("op", "m", 60.0)
    clock.now += 1.1
    assert reader.timeout_for("op", "m", 25.0) == 90.0
    reader.settings = AdaptiveSettings(ceiling=50.0)  # a changed setting applies at once
    assert reader.timeout_for("op", "m", 25.0) == 50.0


def test_redis_down_gives_the_default(dead_redis_client):
    t = AdaptiveTimeouts(dead_redis_client)
    t.record("op", "m", 5.0)
    assert t.timeout_for("op", "m", 30.0) == 30.0
    assert AdaptiveTimeouts(None).timeout_for("op", "m", 12.0) == 12.0


def test_record_many_is_one_round_trip_and_equals_recording_one_by_one(redis_client):
    one_by_one, batched = fresh(redis_client, window=5), fresh(redis_client, window=5)
    batched._prefix += "batched:"
    samples = [("op", "m", float(i)) for i in range(8)] + [("other", "m", 3.0), ("op", "m", 99.0)]
    for sample in samples:
        one_by_one.record(*sample)
    round_trips = []
    real_pipeline = redis_client.pipeline

    def pipeline(*args, **kwargs):
        round_trips.append(True)
        return real_pipeline(*args, **kwargs)

    redis_client.pipeline = pipeline
    try:
        batched.record_many(samples)
        batched.record_many([])  # nothing to write: no round trip
    finally:
        del redis_client.pipeline
    assert len(round_trips) == 1
    for operation in ("op", "other"):
        assert batched.samples(operation, "m") == one_by_one.samples(operation, "m")
    assert batched.samples("op", "m") == [99.0, 7.0, 6.0, 5.0, 4.0]  # newest first, trimmed to the window


def test_record_many_with_redis_down_never_raises(dead_redis_client):
    AdaptiveTimeouts(dead_redis_client).record_many([("op", "m", 1.0)])
    AdaptiveTimeouts(None).record_many([("op", "m", 1.0)])
