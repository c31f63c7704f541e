"""Circuit breaker: state machine, shared state in a real Redis, probes under concurrency, Redis down."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid

import pytest
import redis

from agentops.observability.metrics import BREAKER_STATE, BREAKER_TRANSITIONS
from agentops.runtime.breaker import BreakerRegistry, BreakerSettings, BreakerState, CircuitBreaker
from tests.fixtures.runtime import FakeClock, fail_fast_redis, free_port


def gauge(name: str) -> float:
    return BREAKER_STATE.labels(breaker=name)._value.get()


def transitions(name: str, to_state: str) -> float:
    return BREAKER_TRANSITIONS.labels(breaker=name, to_state=to_state)._value.get()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_000_000.0)


@pytest.fixture
def events() -> list[tuple[str, BreakerState, BreakerState]]:
    return []


def unique(name: str) -> str:
    """Breaker names unique per test, so runs sharing a development Redis cannot disturb each other."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def make(redis_client, clock, events=None, name=None, **settings) -> CircuitBreaker:
    name = name or unique("openai:gpt-4o")
    hook = events.append if events is not None else None
    return CircuitBreaker(
        redis_client,
        name,
        BreakerSettings(**settings),
        on_state_change=(lambda *e: hook(e)) if hook else None,
        clock=clock,
    )


def counting_script(b: CircuitBreaker) -> list[str]:
    """Record the operation of every script call ``b`` makes to Redis."""
    ops: list[str] = []
    real = b._script

    def script(keys, args):
        ops.append(args[0])
        return real(keys=keys, args=args)

    b._script = script
    return ops


def test_allow_answers_from_a_recent_closed_observation_without_redis(redis_client, clock):
    b = make(redis_client, clock, failure_threshold=2)
    ops = counting_script(b)
    assert b.allow() and b.allow() and b.allow()
    assert ops == ["allow"]  # one round trip, then the 0.2 s observation
    clock.advance(0.19)
    assert b.allow()
    assert ops == ["allow"]
    clock.advance(0.02)
    assert b.allow()
    assert ops == ["allow", "allow"]  # the observation expired: Redis again (and a fresh observation)
    clock.advance(-5)  # a wall clock stepping back never extends the observation
    assert b.allow()
    assert ops == ["allow", "allow", "allow"]


def test_own_failures_and_operator_actions_are_never_late(redis_client, clock):
    b = make(redis_client, clock, failure_threshold=2)
    assert b.allow()
    b.record_failure()  # a failure streak: no more answers from memory
    ops = counting_script(b)
    assert b.allow() and b.allow()
    assert ops == ["allow", "allow"]
    b.record_failure()
    assert not b.allow()  # opened by this process: refused at once
    b.reset()  # closed with no failures again: remembered
    ops.clear()
    assert b.allow()
    assert ops == []
    b.force_open()
    assert not b.allow()
    b.force_close()
    assert b.allow()


def test_another_breaker_object_opening_it_is_seen_within_closed_cache_seconds(redis_client, clock):
    """Two objects on the same Redis state stand for two processes."""
    here = make(redis_client, clock, failure_threshold=1)
    there = make(redis_client, clock, name=here.name, failure_threshold=1)
    assert here.allow()
    there.record_failure()
    assert there.state() is BreakerState.OPEN
    assert here.allow()  # the documented bound: up to closed_cache_seconds late
    clock.advance(0.21)
    assert not here.allow()
    immediate = CircuitBreaker(
        redis_client, unique("p:m"), BreakerSettings(failure_threshold=1), clock=clock, closed_cache_seconds=0
    )
    other = make(redis_client, clock, name=immediate.name, failure_threshold=1)
    assert immediate.allow()
    other.record_failure()
    assert not immediate.allow()  # closed_cache_seconds=0: every allow() asks Redis


def test_an_older_closed_reply_cannot_override_a_newer_failure(redis_client, clock):
    """A reply that left Redis before this process's own failure (threads racing) must not be remembered."""
    b = make(redis_client, clock, failure_threshold=1)
    real = b._script
    raced = []

    def script(keys, args):
        reply = real(keys=keys, args=args)
        if args[0] == "allow" and not raced:
            raced.append(True)
            b.record_failure()  # another thread's failure lands after our allow's script ran
        return reply

    b._script = script
    assert b.allow()  # the (older) reply said closed with no failures...
    b._script = real
    assert not b.allow()  # ...but was not remembered: the newer failure opened the breaker
    assert b.state() is BreakerState.OPEN


def test_threshold_consecutive_failures_open_the_breaker(redis_client, clock, events):
    b = make(redis_client, clock, events, failure_threshold=3)
    before = transitions(b.name, "open")
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert b.state() is BreakerState.CLOSED
    assert b.allow()
    b.record_failure()
    assert b.state() is BreakerState.OPEN
    assert not b.allow()
    assert events == [(b.name, BreakerState.CLOSED, BreakerState.OPEN)]
    assert transitions(b.name, "open") == before + 1
    assert gauge(b.name) == 2
    stored = redis_client.hgetall(b.key)
    assert stored[b"state"] == b"open" and stored[b"failures"] == b"3"


def test_success_resets_the_failure_streak(redis_client, clock):
    b = make(redis_client, clock, failure_threshold=3)
    b.record_failure()
    b.record_failure()
    b.allow()
    b.record_success()
    b.record_failure()
    b.record_failure()
    assert b.state() is BreakerState.CLOSED
    assert b.snapshot()["failures"] == 2


def test_recovery_half_open_probe_success_closes(redis_client, clock, events):
    b = make(redis_client, clock, events, failure_threshold=2, recovery_timeout=60)
    b.record_failure()
    b.record_failure()
    clock.advance(59.9)
    assert not b.allow()
    clock.advance(0.1)
    assert b.allow()  # the one probe
    assert b.state() is BreakerState.HALF_OPEN
    assert gauge(b.name) == 1
    assert not b.allow()  # half_open_max_probes=1
    assert b.snapshot()["probes_in_flight"] == 1
    b.record_success()
    assert b.state() is BreakerState.CLOSED
    assert gauge(b.name) == 0
    assert b.snapshot()["failures"] == 0
    assert [e[1:] for e in events] == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


def test_half_open_failure_reopens_with_a_fresh_timer(redis_client, clock):
    b = make(redis_client, clock, failure_threshold=1, recovery_timeout=10)
    b.record_failure()
    first_open = b.snapshot()["opened_at"]
    clock.advance(10)
    assert b.allow()
    b.record_failure()
    snap = b.snapshot()
    assert snap["state"] == "open"
    assert snap["opened_at"] == pytest.approx(first_open + 10)
    clock.advance(9)
    assert not b.allow()
    clock.advance(1)
    assert b.allow()


def test_half_open_admits_exactly_n_probes_to_concurrent_callers(redis_client, clock):
    b = make(redis_client, clock, failure_threshold=1, recovery_timeout=5, half_open_max_probes=3)
    b.record_failure()
    clock.advance(5)
    # Several breaker objects (as in several threads of several processes) on the same Redis state.
    breakers = [
        make(redis_client, clock, name=b.name, failure_threshold=1, recovery_timeout=5, half_open_max_probes=3)
        for _ in range(4)
    ]
    start = threading.Barrier(16)
    admitted = []

    def caller(i: int) -> None:
        start.wait()
        for _ in range(5):
            admitted.append(breakers[i % 4].allow())

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 3
    assert len(admitted) == 80
    assert b.snapshot()["probes_in_flight"] == 3


def test_a_lost_probe_is_reclaimed_after_another_recovery_timeout(redis_client, clock):
    b = make(redis_client, clock, failure_threshold=1, recovery_timeout=5)
    b.record_failure()
    clock.advance(5)
    assert b.allow()  # this probe's caller "crashes" and never reports
    clock.advance(4.9)
    assert not b.allow()
    clock.advance(0.1)
    assert b.allow()


def test_force_open_stays_until_reset(redis_client, clock, events):
    b = make(redis_client, clock, events, recovery_timeout=1)
    b.force_open()
    assert not b.allow()
    b.record_success()
    clock.advance(3600)
    assert not b.allow()
    assert b.snapshot()["forced"] == "open"
    b.reset()
    assert b.allow()
    snap = b.snapshot()
    assert (snap["state"], snap["forced"], snap["failures"]) == ("closed", None, 0)
    assert [e[1:] for e in events] == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.CLOSED),
    ]


def test_force_close_ignores_failures_until_reset(redis_client, clock):
    b = make(redis_client, clock, failure_threshold=2)
    b.record_failure()
    b.record_failure()
    assert not b.allow()
    b.force_close()
    for _ in range(10):
        assert b.allow()
        b.record_failure()
    assert b.state() is BreakerState.CLOSED
    b.reset()
    b.record_failure()
    b.record_failure()
    assert b.state() is BreakerState.OPEN


def test_snapshot_shape(redis_client, clock):
    b = make(redis_client, clock, failure_threshold=1)
    b.record_failure()
    snap = b.snapshot()
    assert snap["name"].startswith("openai:gpt-4o-")
    assert snap["state"] == "open"
    assert snap["failures"] == 1
    assert snap["opened_at"] == pytest.approx(clock.now)
    assert snap["probes_in_flight"] == 0
    assert snap["forced"] is None
    assert snap["backend"] == "redis"


def test_a_broken_state_change_hook_never_breaks_the_call(redis_client, clock):
    def boom(*_):
        raise RuntimeError("listener down")

    b = CircuitBreaker(
        redis_client, unique("p:m"), BreakerSettings(failure_threshold=1), on_state_change=boom, clock=clock
    )
    b.record_failure()
    assert b.state() is BreakerState.OPEN


def test_lua_and_in_memory_state_machines_agree(redis_client, clock):
    """The Redis-down fallback must behave exactly like the shared breaker."""
    settings = dict(failure_threshold=2, recovery_timeout=10, half_open_max_probes=2)
    shared = make(redis_client, clock, name=unique("eq:redis"), **settings)
    local = make(None, clock, name=unique("eq:memory"), **settings)
    ops = [
        "allow",
        "failure",
        "success",
        "failure",
        "failure",
        "allow",
        ("tick", 10),
        "allow",
        "allow",
        "allow",
        "failure",
        ("tick", 10),
        "allow",
        "success",
        "failure",
        "force_open",
        "allow",
        "success",
        ("tick", 100),
        "allow",
        "force_close",
        "failure",
        "failure",
        "allow",
        "reset",
        "failure",
        "failure",
        ("tick", 10),
        "allow",
        ("tick", 10),
        "allow",
        "allow",
        "success",
        "state",
    ]
    for op in ops:
        if isinstance(op, tuple):
            clock.advance(op[1])
            continue
        results = []
        for b in (shared, local):
            fn = {
                "allow": b.allow,
                "success": b.record_success,
                "failure": b.record_failure,
                "force_open": b.force_open,
                "force_close": b.force_close,
                "reset": b.reset,
                "state": b.state,
            }[op]
            out = fn()
            snap = b.snapshot()
            results.append(
                (out, {k: snap[k] for k in ("state", "failures", "opened_at", "probes_in_flight", "forced")})
            )
        assert results[0] == results[1], op
    assert local.snapshot()["backend"] == "memory"


def test_registry_shares_names_and_picks_up_changed_settings(redis_client):
    current = {"threshold": 5}
    names_key = unique("agentops:test:breakers")
    provider = unique("openai")
    reg_a = BreakerRegistry(
        redis_client, lambda name: BreakerSettings(failure_threshold=current["threshold"]), names_key=names_key
    )
    reg_b = BreakerRegistry(redis_client, lambda name: BreakerSettings(), names_key=names_key)
    a = reg_a.get(provider, "gpt-4o")
    assert a is reg_a.get(provider, "gpt-4o")
    assert a.name == f"{provider}:gpt-4o"
    reg_a.get(provider, "small")
    assert reg_b.all_names() == [f"{provider}:gpt-4o", f"{provider}:small"]  # another process sees both
    current["threshold"] = 1
    assert reg_a.get(provider, "gpt-4o").settings.failure_threshold == 1
    a.record_failure()
    assert reg_b.get(provider, "gpt-4o").state() is BreakerState.OPEN
    snaps = {s["name"]: s["state"] for s in reg_b.snapshots()}
    assert snaps == {f"{provider}:gpt-4o": "open", f"{provider}:small": "closed"}


def test_redis_unreachable_falls_back_to_an_in_memory_breaker(dead_redis_client, clock, events):
    b = make(dead_redis_client, clock, events, failure_threshold=2, recovery_timeout=5)
    attempts = []
    real = dead_redis_client.execute_command
    dead_redis_client.execute_command = lambda *a, **k: attempts.append(a[0]) or real(*a, **k)
    assert b.allow()  # nothing raises, calls are not blocked
    b.record_failure()
    b.record_failure()
    assert not b.allow()  # this process still protects itself
    assert b.using_fallback
    assert b.snapshot()["backend"] == "memory"
    clock.advance(5)
    assert b.allow()
    b.record_success()
    assert b.state() is BreakerState.CLOSED
    assert len(attempts) == 1  # Redis is not retried on every call, only every redis_retry_interval
    assert [e[2] for e in events] == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]
    reg = BreakerRegistry(dead_redis_client, lambda n: BreakerSettings())
    reg.get("p", "m")  # nothing raises; the name is registered once Redis answers
    assert reg.all_names() == ["p:m"]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_going_away_and_coming_back(tmp_path, clock):
    port = free_port()

    def start_redis() -> subprocess.Popen:
        proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp_path),
            ],
            stdout=subprocess.DEVNULL,
        )
        probe = redis.Redis(port=port, socket_connect_timeout=0.2)
        for _ in range(100):
            try:
                probe.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        probe.close()
        return proc

    server = start_redis()
    client = fail_fast_redis(f"redis://127.0.0.1:{port}/0")
    try:
        b = CircuitBreaker(
            client,
            unique("p:m"),
            BreakerSettings(failure_threshold=2, recovery_timeout=5),
            clock=clock,
            redis_retry_interval=0,
        )
        b.record_failure()
        b.record_failure()
        assert not b.allow() and not b.using_fallback
        server.terminate()
        server.wait()
        # Redis gone: the local breaker starts from the last shared state this process saw (open).
        assert not b.allow()
        assert b.using_fallback
        clock.advance(5)
        assert b.allow()
        server = start_redis()  # empty again (no persistence): the shared state is closed
        assert b.state() is BreakerState.CLOSED
        assert not b.using_fallback
        assert client.hget(b.key, "state") is None  # peek does not write
        b.record_failure()
        assert client.hget(b.key, "failures") == b"1"
    finally:
        client.close()
        server.terminate()
        server.wait()
