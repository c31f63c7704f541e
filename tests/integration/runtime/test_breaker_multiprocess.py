"""Breakers shared across real processes through Redis (a fresh interpreter, and forked processes)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
import uuid

import redis

from agentops.runtime.breaker import BreakerSettings, BreakerState, CircuitBreaker
from tests.fixtures.runtime import REPO_ROOT

# A worker in a fresh interpreter: run one action on the shared breaker, print what it saw as JSON.
CHILD = textwrap.dedent(
    """
    import json, sys, redis
    from agentops.runtime.breaker import BreakerSettings, CircuitBreaker

    url, name, action, count, threshold, recovery, probes = sys.argv[1:]
    client = redis.Redis.from_url(url)
    events = []
    breaker = CircuitBreaker(
        client, name,
        BreakerSettings(int(threshold), float(recovery), int(probes)),
        on_state_change=lambda n, old, new: events.append([old.value, new.value]),
    )
    admitted = 0
    for _ in range(int(count)):
        if action == "fail":
            breaker.record_failure()
        elif action == "allow":
            admitted += breaker.allow()
    print(json.dumps({"events": events, "admitted": admitted, "state": breaker.state().value}))
    """
)


def spawn(redis_url, name, action, count, *, threshold=5, recovery=60.0, probes=1):
    """A fresh interpreter (as a separately started worker would be)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = [redis_url, name, action, str(count), str(threshold), str(recovery), str(probes)]
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result(proc) -> dict:
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return json.loads(out)


def test_failures_in_one_process_open_the_breaker_for_another(redis_client, redis_url):
    name = f"openai:gpt-4o-mini-{uuid.uuid4().hex[:8]}"
    # closed_cache_seconds=0: every allow() asks Redis, so the other process's transition is seen at once.
    here = CircuitBreaker(redis_client, name, BreakerSettings(failure_threshold=3), closed_cache_seconds=0)
    assert here.allow()
    child = result(spawn(redis_url, name, "fail", 3, threshold=3))
    assert child["events"] == [["closed", "open"]]  # the transition (and its ops event) happened there
    assert child["state"] == "open"
    assert not here.allow()  # ...and blocks calls here
    assert here.state() is BreakerState.OPEN


def test_with_the_default_closed_cache_another_process_opening_is_seen_within_its_bound(redis_client, redis_url):
    name = f"openai:gpt-4o-mini-{uuid.uuid4().hex[:8]}"
    clock = [1_000_000.0]  # this process's clock only drives its cached observation (and its own timestamps)
    here = CircuitBreaker(redis_client, name, BreakerSettings(failure_threshold=3), clock=lambda: clock[0])
    assert here.closed_cache_seconds == 0.2
    assert here.allow()  # closed, no failures: remembered for 0.2 s
    child = result(spawn(redis_url, name, "fail", 3, threshold=3))
    assert child["state"] == "open"
    assert here.allow()  # the documented staleness: still within 0.2 s of the observation
    clock[0] += 0.21
    assert not here.allow()  # past the bound: Redis is asked and the breaker is open here too
    assert here.state() is BreakerState.OPEN


def _forked_worker(redis_url, name, action, count, settings, barrier, results) -> None:
    client = redis.Redis.from_url(redis_url)  # never share a connection across fork
    events = []
    breaker = CircuitBreaker(client, name, settings, on_state_change=lambda n, old, new: events.append(new.value))
    barrier.wait(timeout=60)
    admitted = 0
    for _ in range(count):
        if action == "fail":
            breaker.record_failure()
        else:
            admitted += breaker.allow()
    results.put({"events": events, "admitted": admitted})


def run_forked(redis_url, name, action, count, settings, n=4, before_go=None) -> list[dict]:
    """n fresh processes act on the same breaker at the same moment. Spawned, not forked: the test
    process has threads (Playwright, the live-event sender) and a forked copy of a locked lock hangs."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_forked_worker, args=(redis_url, name, action, count, settings, barrier, results))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    if before_go is not None:
        before_go()
    barrier.wait(timeout=60)
    out = [results.get(timeout=15) for _ in procs]
    for p in procs:
        p.join(timeout=15)
        assert p.exitcode == 0
    return out


def test_concurrent_failures_from_many_processes_are_counted_exactly(redis_client, redis_url):
    name = f"openai:concurrent-{uuid.uuid4().hex[:8]}"
    results = run_forked(redis_url, name, "fail", 25, BreakerSettings(failure_threshold=100))
    assert sum(len(r["events"]) for r in results) == 1  # exactly one process made the closed → open move
    snap = CircuitBreaker(redis_client, name).snapshot()
    assert snap["failures"] == 100
    assert snap["state"] == "open"


def test_half_open_probe_limit_holds_across_processes(redis_client, redis_url):
    name = f"openai:probes-{uuid.uuid4().hex[:8]}"
    settings = BreakerSettings(failure_threshold=1, recovery_timeout=0.2, half_open_max_probes=2)
    breaker = CircuitBreaker(redis_client, name, settings)
    breaker.record_failure()
    opened_at = breaker.snapshot()["opened_at"]

    def sleep_past_the_recovery_timeout() -> None:
        time.sleep(max(0.0, opened_at + 0.21 - time.time()))

    results = run_forked(redis_url, name, "allow", 10, settings, before_go=sleep_past_the_recovery_timeout)
    assert sum(r["admitted"] for r in results) == 2
    assert sum(len(r["events"]) for r in results) == 1  # open → half_open, once
    assert breaker.snapshot()["probes_in_flight"] == 2
