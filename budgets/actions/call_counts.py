"""Every LLM call's outcome, counted where the error-rate alert reads it: runs and gateway calls (the guard
pipeline counts each call it ends) and the usage agents report themselves (``/api/v1/usage``, reservation
settles). Before this, the alert counted run steps only, so a failing gateway was invisible to it.

Counts live in Redis in 10-second buckets (``agentops:llm_calls:<bucket>``: ``total`` and ``failed``, kept
15 minutes), shared by every web and worker process. ``count()`` is on the guard's hot path, so it only adds
to this process's pending counts; a writer thread sends them in one pipelined round trip every half second
(``flush()`` sends them now). Counts of a process that dies in that half second are lost, and Redis being down
loses them: an alert's input, not a ledger (the ledger is PostgreSQL's).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

from agentops.lib.redis import runtime_redis

log = structlog.get_logger(__name__)

BUCKET_SECONDS = 10
KEY_PREFIX = "agentops:llm_calls:"
KEY_TTL_SECONDS = 900
FLUSH_INTERVAL = 0.5
# A call that failed (every handler, or mid-stream) counts as failed; one that never reached a provider, or
# waits for a person, is not a call of its own yet.
FAILED = frozenset({"failed", "error"})
NOT_CALLS = frozenset({"budget_exceeded", "pending", "rejected"})


class CallCounts:
    """The process's counter (the guard's ``CallCounter``)."""

    def __init__(
        self,
        redis_factory: Callable[[], Any] = runtime_redis,
        *,
        clock: Callable[[], float] = time.time,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._redis = redis_factory
        self._clock = clock
        self._interval = flush_interval
        self._pending: Counter[tuple[int, str]] = Counter()
        self._lock = threading.Lock()
        self._writer_pid: int | None = None
        self._warned = False

    def count(self, outcome: str, calls: int = 1) -> None:
        if outcome in NOT_CALLS or calls <= 0:
            return
        bucket = int(self._clock() // BUCKET_SECONDS)
        with self._lock:
            self._pending[(bucket, "total")] += calls
            if outcome in FAILED:
                self._pending[(bucket, "failed")] += calls
            if self._writer_pid != os.getpid():
                self._start_writer()

    def flush(self) -> None:
        """Send the pending counts now (a Redis error drops them, logged once)."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
        if not pending:
            return
        try:
            pipe = self._redis().pipeline(transaction=False)
            for (bucket, field), amount in pending.items():
                pipe.hincrby(f"{KEY_PREFIX}{bucket}", field, amount)
            for bucket in {bucket for bucket, _ in pending}:
                pipe.expire(f"{KEY_PREFIX}{bucket}", KEY_TTL_SECONDS)
            pipe.execute()
        except Exception as exc:  # never let counting break a call or kill the writer
            if not self._warned:
                log.warning("llm_calls.count_lost", error=repr(exc)[:300])
                self._warned = True
        else:
            self._warned = False

    def _start_writer(self) -> None:
        # Under self._lock. A forked child starts its own writer (threads do not survive a fork).
        self._writer_pid = os.getpid()
        threading.Thread(target=self._write_behind, name="agentops-llm-call-counts", daemon=True).start()

    def _write_behind(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush()


def window(seconds: float = 300, *, now: float | None = None, redis_client: Any = None) -> tuple[int, int]:
    """(calls, failed calls) over the last ``seconds`` (whole 10-second buckets), every process's. Raises the
    Redis client's error when Redis cannot be read."""
    now = time.time() if now is None else now
    last = int(now // BUCKET_SECONDS)
    first = int((now - seconds) // BUCKET_SECONDS) + 1
    client = redis_client or runtime_redis()
    pipe = client.pipeline(transaction=False)
    for bucket in range(first, last + 1):
        pipe.hmget(f"{KEY_PREFIX}{bucket}", "total", "failed")
    total = failed = 0
    for calls, failures in pipe.execute():
        total += int(calls or 0)
        failed += int(failures or 0)
    return total, failed


_counts: CallCounts | None = None
_counts_lock = threading.Lock()


def call_counts() -> CallCounts:
    """This process's counter (the guard's ``calls`` dependency; the usage API counts through it too)."""
    global _counts
    with _counts_lock:
        if _counts is None:
            _counts = CallCounts()
        return _counts
