"""Circuit breakers shared by every agentops process through Redis.

One breaker per ``provider:model``. Its state lives in a Redis hash (``agentops:breaker:<name>``) and every
read-modify-write is one Lua script, so the web processes and all Celery workers see and change the same
breaker atomically: failures recorded by one worker open it for all, and when the recovery timeout has
passed exactly ``half_open_max_probes`` callers in the whole fleet get a probe slot.

States::

    closed ──(failure_threshold consecutive failures)──► open
    open ──(recovery_timeout elapsed, next allow())──► half_open (admits half_open_max_probes probes)
    half_open ──success──► closed          half_open ──failure──► open (fresh recovery timer)

Operators may ``force_open`` / ``force_close``; a forced state ignores successes and failures and stays until
``reset()`` (or the opposite force). A probe slot whose caller never reports back (crashed process) is
reclaimed after another ``recovery_timeout``, so a lost probe cannot wedge a breaker in half-open.

Redis unreachable — the documented safe state
---------------------------------------------
If Redis raises ``ConnectionError`` / ``TimeoutError`` the breaker falls back to a per-process in-memory
breaker with exactly the same state machine, seeded with the last state this process saw in Redis. Each
process therefore still protects itself (it opens after its own ``failure_threshold`` failures), calls are
neither all blocked nor all admitted blindly, and nothing raises. Redis is tried again at most every
``redis_retry_interval`` seconds; as soon as it answers the shared state is used again (the local state is
dropped; Redis is the source of truth). Give the runtime a client that fails fast (one attempt, short socket
timeouts): redis-py 8's default retries a dead connection 10 times with backoff, about 4 s per command.

Hot-path shortcut: a recent "closed, no failures" observation
---------------------------------------------------------------
``allow()`` would be one Redis round trip per guarded call. Instead, when this process's last reply from the
shared state (any operation) said *closed with zero failures*, ``allow()`` answers ``True`` from that
observation for ``closed_cache_seconds`` (default 0.2 s) without asking Redis. That is the documented bound on
staleness: **a process sees another process opening (or an operator force-opening) the breaker at most
``closed_cache_seconds`` late**, i.e. it may still admit calls to a provider for that long after the
breaker opened elsewhere. Anything this process does or learns drops the observation at once: its own
``record_failure`` / ``force_*`` / ``reset``, or any reply showing failures or another state, so this process's
own transitions are never late. An open or half-open breaker is never answered from memory (probe slots are
always taken in Redis), nor a closed one with a failure streak; ``record_failure`` always runs in Redis, so
failures are counted exactly. ``closed_cache_seconds=0`` restores one Redis round trip per ``allow()``.

Timestamps come from the injected ``clock`` (wall clock by default, so processes on several machines agree to
within their clock skew). Pure Python: no Django import.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from agentops.observability.metrics import BREAKER_STATE, BREAKER_TRANSITIONS

logger = logging.getLogger(__name__)

REDIS_DOWN_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


STATE_GAUGE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 5
    recovery_timeout: float = 60.0
    half_open_max_probes: int = 1


StateChangeHook = Callable[[str, BreakerState, BreakerState], None]

# One script for every operation: read the hash, apply the state machine, write back, reply with the new
# state. Returns {allowed, old_state, new_state, failures, opened_at (string: Lua would truncate the float),
# probes_in_flight, forced}. _LocalBreakerState.apply below is the same machine in Python; keep them equal.
_TRANSITION_LUA = """
local key = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local threshold = tonumber(ARGV[3])
local recovery = tonumber(ARGV[4])
local max_probes = tonumber(ARGV[5])
local h = redis.call('HMGET', key, 'state', 'failures', 'opened_at', 'probes', 'probe_at', 'forced')
local state = h[1] or 'closed'
local failures = tonumber(h[2]) or 0
local opened_at = tonumber(h[3]) or 0
local probes = tonumber(h[4]) or 0
local probe_at = tonumber(h[5]) or 0
local forced = h[6] or ''
local old = state
local allowed = 0
local dirty = false

if op == 'allow' then
  if forced == 'open' then
    allowed = 0
  elseif forced == 'closed' or state == 'closed' then
    allowed = 1
  else
    if state == 'open' and now - opened_at >= recovery then
      state = 'half_open'; probes = 0; dirty = true
    end
    if state == 'half_open' then
      if probes > 0 and now - probe_at >= recovery then probes = 0 end
      if probes < max_probes then
        probes = probes + 1; probe_at = now; allowed = 1; dirty = true
      end
    end
  end
elseif op == 'success' then
  if forced == '' then
    if state == 'half_open' then
      state = 'closed'; failures = 0; probes = 0; dirty = true
    elseif state == 'closed' and failures > 0 then
      failures = 0; dirty = true
    end
  end
elseif op == 'failure' then
  if forced == '' then
    failures = failures + 1; dirty = true
    if state == 'closed' then
      if failures >= threshold then state = 'open'; opened_at = now; probes = 0 end
    elseif state == 'half_open' then
      state = 'open'; opened_at = now; probes = 0
    end
  end
elseif op == 'force_open' then
  if state ~= 'open' then opened_at = now end
  forced = 'open'; state = 'open'; probes = 0; dirty = true
elseif op == 'force_close' then
  forced = 'closed'; state = 'closed'; failures = 0; probes = 0; dirty = true
elseif op == 'reset' then
  forced = ''; state = 'closed'; failures = 0; probes = 0; opened_at = 0; probe_at = 0; dirty = true
end
if dirty then
  redis.call('HSET', key, 'state', state, 'failures', failures, 'opened_at', tostring(opened_at),
             'probes', probes, 'probe_at', tostring(probe_at), 'forced', forced)
end
return {allowed, old, state, failures, tostring(opened_at), probes, forced}
"""


@dataclass(frozen=True)
class _Reply:
    allowed: bool
    old: BreakerState
    new: BreakerState
    failures: int
    opened_at: float
    probes: int
    forced: str


class _LocalBreakerState:
    """The Lua state machine in Python, for the Redis-down fallback (one per breaker per process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.probes = 0
        self.probe_at = 0.0
        self.forced = ""

    def seed(self, reply: _Reply | None) -> None:
        if reply is None:
            return
        with self.lock:
            self.state = reply.new.value
            self.failures = reply.failures
            self.opened_at = reply.opened_at
            self.probes = 0
            self.forced = reply.forced

    def apply(self, op: str, now: float, s: BreakerSettings) -> _Reply:
        with self.lock:
            old = state = self.state
            allowed = False
            if op == "allow":
                if self.forced == "open":
                    allowed = False
                elif self.forced == "closed" or state == "closed":
                    allowed = True
                else:
                    if state == "open" and now - self.opened_at >= s.recovery_timeout:
                        state = "half_open"
                        self.probes = 0
                    if state == "half_open":
                        if self.probes > 0 and now - self.probe_at >= s.recovery_timeout:
                            self.probes = 0
                        if self.probes < s.half_open_max_probes:
                            self.probes += 1
                            self.probe_at = now
                            allowed = True
            elif op == "success":
                if not self.forced:
                    if state == "half_open":
                        state, self.failures, self.probes = "closed", 0, 0
                    elif state == "closed":
                        self.failures = 0
            elif op == "failure":
                if not self.forced:
                    self.failures += 1
                    if state == "closed":
                        if self.failures >= s.failure_threshold:
                            state, self.opened_at, self.probes = "open", now, 0
                    elif state == "half_open":
                        state, self.opened_at, self.probes = "open", now, 0
            elif op == "force_open":
                if state != "open":
                    self.opened_at = now
                self.forced, state, self.probes = "open", "open", 0
            elif op == "force_close":
                self.forced, state, self.failures, self.probes = "closed", "closed", 0, 0
            elif op == "reset":
                self.forced, state, self.failures, self.probes = "", "closed", 0, 0
                self.opened_at = self.probe_at = 0.0
            self.state = state
            return _Reply(
                allowed,
                BreakerState(old),
                BreakerState(state),
                self.failures,
                self.opened_at,
                self.probes,
                self.forced,
            )


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


DEFAULT_CLOSED_CACHE_SECONDS = 0.2

# Operations that change the shared state: they drop this process's "closed" observation before running, so a
# reply to an older ``allow()`` that lands after them cannot re-establish it.
_MUTATING_OPS = frozenset({"success", "failure", "force_open", "force_close", "reset"})


class CircuitBreaker:
    """One shared breaker. Thread-safe; cheap to call (one Redis round trip per operation, none for
    ``allow()`` while a recent observation says closed with no failures — see ``closed_cache_seconds``).

    ``settings`` may be replaced at run time (the registry does so when an admin changes thresholds).
    """

    def __init__(
        self,
        redis_client: redis.Redis | None,
        name: str,
        settings: BreakerSettings = BreakerSettings(),
        *,
        on_state_change: StateChangeHook | None = None,
        clock: Callable[[], float] = time.time,
        key_prefix: str = "agentops:breaker:",
        redis_retry_interval: float = 1.0,
        closed_cache_seconds: float = DEFAULT_CLOSED_CACHE_SECONDS,
    ) -> None:
        self.name = name
        self.settings = settings
        self.key = f"{key_prefix}{name}"
        self._redis = redis_client
        self._script = redis_client.register_script(_TRANSITION_LUA) if redis_client is not None else None
        self._on_state_change = on_state_change
        self._clock = clock
        self._retry_interval = redis_retry_interval
        self._local = _LocalBreakerState()
        self._redis_down_since: float | None = None if redis_client is not None else 0.0
        self._last: _Reply | None = None
        self._seen_state: BreakerState | None = None
        self.closed_cache_seconds = closed_cache_seconds
        # clock() reading taken just before the Redis call whose reply said "closed, no failures"; None when
        # there is no such fresh observation. _epoch counts mutating operations (see _MUTATING_OPS), _mutating
        # those in flight; both guard against an older reply overwriting what a newer one established.
        self._closed_seen_at: float | None = None
        self._epoch = 0
        self._mutating = 0
        self._cache_lock = threading.Lock()

    # --- public API ------------------------------------------------------------------------------
    def allow(self) -> bool:
        """May a call go to this provider+model now? Reserves a probe slot when half-open.

        Answered without Redis while this process saw "closed, no failures" less than ``closed_cache_seconds``
        ago (see the module docstring)."""
        seen = self._closed_seen_at
        if seen is not None:
            age = self._clock() - seen
            if 0.0 <= age < self.closed_cache_seconds:
                return True
        return self._run("allow").allowed

    def record_success(self) -> None:
        """A call admitted by ``allow()`` succeeded: half-open → closed; closed → failure streak reset."""
        last = self._last
        if last is not None and last.new is BreakerState.CLOSED and last.failures == 0 and not last.forced:
            # Nothing to reset as far as this process last saw: skip the round trip (hot path). Equivalent to
            # this success having landed at the moment of that last reply.
            return
        self._run("success")

    def record_failure(self) -> None:
        """A call admitted by ``allow()`` failed (a system error): may open the breaker."""
        self._run("failure")

    def state(self) -> BreakerState:
        return self._run("peek").new

    @property
    def seen_state(self) -> BreakerState | None:
        """The state this process last saw (no Redis round trip; None before its first operation)."""
        return self._seen_state

    def snapshot(self) -> dict[str, Any]:
        """State for the ops page and the API: name, state, failures, opened_at, probes_in_flight, forced."""
        reply = self._run("peek")
        return {
            "name": self.name,
            "state": reply.new.value,
            "failures": reply.failures,
            "opened_at": reply.opened_at or None,
            "probes_in_flight": reply.probes,
            "forced": reply.forced or None,
            "backend": "memory" if self.using_fallback else "redis",
            "failure_threshold": self.settings.failure_threshold,
            "recovery_timeout": self.settings.recovery_timeout,
            "half_open_max_probes": self.settings.half_open_max_probes,
        }

    def force_open(self) -> None:
        """Operator: block every call until ``reset()`` or ``force_close()``."""
        self._run("force_open")

    def force_close(self) -> None:
        """Operator: admit every call (failures ignored) until ``reset()`` or ``force_open()``."""
        self._run("force_close")

    def reset(self) -> None:
        """Operator: back to a clean closed state, clearing any forced state and counts."""
        self._run("reset")

    @property
    def using_fallback(self) -> bool:
        """True while this process uses its in-memory breaker because Redis is unreachable."""
        return self._redis_down_since is not None

    # --- internals -------------------------------------------------------------------------------
    def _run(self, op: str) -> _Reply:
        mutating = op in _MUTATING_OPS
        with self._cache_lock:
            if mutating:
                self._epoch += 1
                self._mutating += 1
                self._closed_seen_at = None
            # This reply may become the cached observation only if no other mutating operation is in flight
            # now (its script could run after ours) and none starts before we are done (checked in _remember).
            epoch = self._epoch if self._mutating == (1 if mutating else 0) else None
        try:
            now = self._clock()
            reply = None
            if self._script is not None and self._should_try_redis():
                try:
                    reply = self._redis_apply(op, now)
                except REDIS_DOWN_ERRORS as exc:
                    self._enter_fallback(exc)
                else:
                    if self._redis_down_since is not None:
                        logger.warning("breaker %s: Redis is back, using the shared state again", self.name)
                        self._redis_down_since = None
            if reply is None:
                reply = self._local.apply(op, now, self.settings)
            self._last = reply
            self._remember(reply, now, epoch)
        finally:
            if mutating:
                with self._cache_lock:
                    self._mutating -= 1
        self._observe(reply)
        return reply

    def _remember(self, reply: _Reply, now: float, epoch: int | None) -> None:
        """Keep (or drop) the "closed, no failures" observation ``allow()`` may answer from."""
        closed = reply.new is BreakerState.CLOSED and reply.failures == 0
        with self._cache_lock:
            if not closed:
                self._closed_seen_at = None
            elif epoch is not None and epoch == self._epoch and self.closed_cache_seconds > 0:
                self._closed_seen_at = now

    def _should_try_redis(self) -> bool:
        down = self._redis_down_since
        return down is None or time.monotonic() - down >= self._retry_interval

    def _enter_fallback(self, exc: Exception) -> None:
        if self._redis_down_since is None:
            logger.warning("breaker %s: Redis unreachable (%s); using a per-process in-memory breaker", self.name, exc)
            self._local = _LocalBreakerState()
            self._local.seed(self._last)
        self._redis_down_since = time.monotonic()

    def _redis_apply(self, op: str, now: float) -> _Reply:
        s = self.settings
        raw = self._script(
            keys=[self.key],
            args=[
                op,
                repr(float(now)),
                s.failure_threshold,
                repr(float(s.recovery_timeout)),
                s.half_open_max_probes,
            ],
        )
        return _Reply(
            allowed=bool(raw[0]),
            old=BreakerState(_decode(raw[1])),
            new=BreakerState(_decode(raw[2])),
            failures=int(raw[3]),
            opened_at=float(_decode(raw[4])),
            probes=int(raw[5]),
            forced=_decode(raw[6]),
        )

    def _observe(self, reply: _Reply) -> None:
        if reply.new is not self._seen_state:
            # Also when another process made the transition: this process's gauge follows what it sees.
            self._seen_state = reply.new
            BREAKER_STATE.labels(breaker=self.name).set(STATE_GAUGE_VALUE[reply.new])
        if reply.old is not reply.new:
            # Only the process whose script made the transition gets here, so one event per transition.
            BREAKER_TRANSITIONS.labels(breaker=self.name, to_state=reply.new.value).inc()
            logger.info("breaker %s: %s -> %s", self.name, reply.old.value, reply.new.value)
            if self._on_state_change is not None:
                try:
                    self._on_state_change(self.name, reply.old, reply.new)
                except Exception:  # a broken listener must never break the guarded call
                    logger.exception("breaker %s: on_state_change hook failed", self.name)


class BreakerRegistry:
    """The breakers of this process, one per ``provider:model``, with settings looked up per name.

    ``settings_for(name)`` is consulted on every ``get()`` so changed thresholds apply without a restart
    (the caller is expected to cache its settings source).
    """

    def __init__(
        self,
        redis_client: redis.Redis | None,
        settings_for: Callable[[str], BreakerSettings],
        *,
        on_state_change: StateChangeHook | None = None,
        clock: Callable[[], float] = time.time,
        key_prefix: str = "agentops:breaker:",
        names_key: str = "agentops:breakers",
        redis_retry_interval: float = 1.0,
        closed_cache_seconds: float = DEFAULT_CLOSED_CACHE_SECONDS,
    ) -> None:
        self._redis = redis_client
        self._settings_for = settings_for
        self._on_state_change = on_state_change
        self._clock = clock
        self._key_prefix = key_prefix
        self._names_key = names_key
        self._retry_interval = redis_retry_interval
        self._closed_cache_seconds = closed_cache_seconds
        self._breakers: dict[str, CircuitBreaker] = {}
        self._unregistered: set[str] = set()
        self._lock = threading.Lock()

    def get(self, provider: str, model: str) -> CircuitBreaker:
        name = f"{provider}:{model}"
        settings = self._settings_for(name)
        breaker = self._breakers.get(name)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.get(name)
                if breaker is None:
                    breaker = CircuitBreaker(
                        self._redis,
                        name,
                        settings,
                        on_state_change=self._on_state_change,
                        clock=self._clock,
                        key_prefix=self._key_prefix,
                        redis_retry_interval=self._retry_interval,
                        closed_cache_seconds=self._closed_cache_seconds,
                    )
                    self._breakers[name] = breaker
                    self._unregistered.add(name)
        elif breaker.settings != settings:
            breaker.settings = settings
        if self._unregistered:
            self._register_names()
        return breaker

    def all_names(self) -> list[str]:
        """Every breaker any process has created (from a Redis set), plus this process's own."""
        names = set(self._breakers)
        if self._redis is not None:
            try:
                names.update(_decode(n) for n in self._redis.smembers(self._names_key))
            except REDIS_DOWN_ERRORS:
                pass
        return sorted(names)

    def snapshots(self) -> list[dict[str, Any]]:
        """Snapshots of ``all_names()`` for the ops page."""
        out = []
        for name in self.all_names():
            provider, _, model = name.partition(":")
            out.append(self.get(provider, model).snapshot())
        return out

    def _register_names(self) -> None:
        if self._redis is None:
            self._unregistered.clear()
            return
        with self._lock:
            pending = list(self._unregistered)
        if not pending:  # another thread registered them in between (SADD with no member is an error)
            return
        try:
            self._redis.sadd(self._names_key, *pending)
        except REDIS_DOWN_ERRORS:
            return  # retried on the next get()
        with self._lock:
            self._unregistered.difference_update(pending)
