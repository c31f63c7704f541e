"""Timeouts: layered defaults, per-step defaults, deadlines and adaptive per-operation timeouts.

Layers nest: a human wait (600 s) > a whole request (300 s) > a tool call (60 s) > one LLM call (30 s).
A ``Deadline`` carries the outer budget down the call stack; each attempt uses ``deadline.cap(timeout)`` so
an inner timeout never outlives the outer one.

Steps (the seed's phases, ``ctx.phase``): planning 15 s, tool_search 10 s, tool_execution 45 s,
response_generation 20 s. A phase's deadline bounds every call made inside it, LLM calls included: a call's
effective timeout is min(the phase's remaining time, the call's own timeout, the request's remaining time).
A critical phase that runs out fails the run; an optional one is skipped (``STEP_CRITICAL``).

Adaptive timeouts: every process records call durations per ``operation:model`` into one Redis list (LPUSH +
LTRIM to the last ``window`` samples; ``record_many`` writes a batch in one pipelined round trip), so all
workers learn from each other. With at least ``min_samples`` samples the timeout is
``clamp(p95 × multiplier, floor, ceiling)`` (nearest-rank p95); below that, or if Redis is unreachable, the
caller's default is used. The computed value is cached in-process for
``cache_seconds`` (1 s) so the hot path does not read Redis on every call. Pure Python: no Django import.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis

logger = logging.getLogger(__name__)

REDIS_ERRORS = (redis.exceptions.RedisError, OSError)

LAYERED_DEFAULTS: dict[str, float] = {"llm": 30.0, "tool": 60.0, "request": 300.0, "human": 600.0}
STEP_DEFAULTS: dict[str, float] = {
    "planning": 15.0,
    "tool_search": 10.0,
    "tool_execution": 45.0,
    "response_generation": 20.0,
}
# Which steps end the run when they time out (critical) and which are skipped, their result None (optional).
STEP_CRITICAL: dict[str, bool] = {
    "planning": True,
    "tool_search": False,
    "tool_execution": False,
    "response_generation": True,
}


class TimeoutExceeded(Exception):
    """A layer's time ran out (raised by our own timeouts, e.g. a deadline that expired between attempts)."""

    def __init__(self, layer: str, seconds: float) -> None:
        super().__init__(f"{layer} timeout exceeded after {seconds:g} s")
        self.layer = layer
        self.seconds = seconds

    def __reduce__(self):  # picklable across Celery / multiprocessing despite the two-argument __init__
        return (type(self), (self.layer, self.seconds))


class Deadline:
    """A point in monotonic time. ``Deadline.after(math.inf)`` never expires."""

    __slots__ = ("_clock", "expires_at")

    def __init__(self, expires_at: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.expires_at = expires_at
        self._clock = clock

    @classmethod
    def after(cls, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock=clock)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.expires_at - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self.expires_at

    def cap(self, seconds: float) -> float:
        """``min(seconds, remaining())``: the timeout to give an inner operation."""
        return min(seconds, self.remaining())

    def check(self, layer: str, seconds: float | None = None) -> None:
        """Raise ``TimeoutExceeded(layer, seconds)`` if expired (``seconds``: the layer default if None)."""
        if self.expired:
            raise TimeoutExceeded(layer, seconds if seconds is not None else LAYERED_DEFAULTS.get(layer, 0.0))

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f}s)"


@dataclass(frozen=True)
class AdaptiveSettings:
    window: int = 100
    min_samples: int = 5
    multiplier: float = 1.5
    floor: float = 10.0
    ceiling: float = 120.0


def p95(samples: list[float]) -> float:
    """Nearest-rank 95th percentile (the smallest sample ≥ 95 % of the samples)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class AdaptiveTimeouts:
    """Latency-driven timeouts per ``operation:model``, learnt from every process through Redis.

    ``settings`` may be replaced at run time; the in-process cache is keyed by the settings in force.
    """

    def __init__(
        self,
        redis_client: redis.Redis | None,
        settings: AdaptiveSettings = AdaptiveSettings(),
        key_prefix: str = "agentops:latency:",
        *,
        cache_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._redis = redis_client
        self._prefix = key_prefix
        self._cache_seconds = cache_seconds
        self._clock = clock
        # (operation, model) -> (computed_at, settings, adaptive value or None when not enough samples)
        self._cache: dict[tuple[str, str], tuple[float, AdaptiveSettings, float | None]] = {}
        self._lock = threading.Lock()

    def key(self, operation: str, model: str) -> str:
        return f"{self._prefix}{operation}:{model}"

    def record(self, operation: str, model: str, seconds: float) -> None:
        """Add one observed duration (successful calls; timeouts are recorded by the caller as the limit)."""
        if self._redis is None:
            return
        key = self.key(operation, model)
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.lpush(key, repr(float(seconds)))
            pipe.ltrim(key, 0, self.settings.window - 1)
            pipe.execute()
        except REDIS_ERRORS as exc:
            logger.debug("adaptive timeouts: cannot record %s (%s)", key, exc)

    def record_many(self, samples: Iterable[tuple[str, str, float]]) -> None:
        """Add many ``(operation, model, seconds)`` durations, oldest first, in ONE pipelined round trip.

        Per key: one LPUSH with every new value (in order, so the newest ends up first, as with ``record``)
        and one LTRIM; the same list as recording them one by one."""
        if self._redis is None:
            return
        by_key: dict[str, list[str]] = {}
        for operation, model, seconds in samples:
            by_key.setdefault(self.key(operation, model), []).append(repr(float(seconds)))
        if not by_key:
            return
        window = self.settings.window
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key, values in by_key.items():
                pipe.lpush(key, *values[-window:])
                pipe.ltrim(key, 0, window - 1)
            pipe.execute()
        except REDIS_ERRORS as exc:
            logger.debug("adaptive timeouts: cannot record %d keys (%s)", len(by_key), exc)

    def samples(self, operation: str, model: str) -> list[float]:
        """The last ``window`` durations, newest first (empty if Redis is unreachable)."""
        if self._redis is None:
            return []
        try:
            raw = self._redis.lrange(self.key(operation, model), 0, self.settings.window - 1)
        except REDIS_ERRORS as exc:
            logger.debug("adaptive timeouts: cannot read %s (%s)", operation, exc)
            return []
        return [float(v) for v in raw]

    def timeout_for(self, operation: str, model: str, default: float) -> float:
        """``clamp(p95 × multiplier, floor, ceiling)`` with enough history, else ``default``."""
        now = self._clock()
        settings = self.settings
        cached = self._cache.get((operation, model))
        if cached is not None and now - cached[0] < self._cache_seconds and cached[1] is settings:
            value = cached[2]
        else:
            value = self._compute(operation, model, settings)
            with self._lock:
                self._cache[(operation, model)] = (now, settings, value)
        return default if value is None else value

    def _compute(self, operation: str, model: str, s: AdaptiveSettings) -> float | None:
        samples = self.samples(operation, model)
        if len(samples) < s.min_samples:
            return None
        return min(s.ceiling, max(s.floor, p95(samples) * s.multiplier))
