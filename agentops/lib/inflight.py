"""Per-key cap on gateway requests in flight (``ApiKey.max_in_flight``), counted in Redis so the cap holds
across every web process (a per-process count would let N processes admit N times the cap).

A slot is a member of the key's sorted set, scored with Redis's own clock: admitting is one Lua call that
drops members older than ``GATEWAY_IN_FLIGHT_TTL_SECONDS`` (slots of a process that died before releasing
them), counts, and adds; releasing removes the member (in a ``finally`` of the request). Like the rate
limiter (agentops/lib/ratelimit.py), an unreachable Redis admits the request: the cap shares the service
fairly, it is not a budget (budgets fail closed).
"""

from __future__ import annotations

import uuid

import structlog
from django.conf import settings

from agentops.lib import activity
from agentops.lib.ratelimit import BUCKET, RateLimited, bucket_key, limits, now_arg
from agentops.lib.redis import runtime_redis

log = structlog.get_logger(__name__)

# KEYS[1] the key's slots; ARGV: slot id, cap, ttl (s). Returns 1 (admitted) or 0 (at the cap).
ADMIT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(ttl))
return 1
"""

# ADMIT and the key's rate-limit token (agentops/lib/ratelimit.py) in ONE round trip: the gateway pays one Redis
# call to let a request in, not two. At the cap nothing is spent ({0}); without a token no slot is taken
# ({-1, seconds until one is back}), as the two calls one after the other did.
# KEYS[1] the key's slots, KEYS[2] its bucket; ARGV: slot id, cap, ttl (s), rate per second, burst, now (s).
ADMIT_WITHIN_RATE = (
    BUCKET
    + """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return {0, '0'} end
local allowed, wait = take_token(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
if allowed == 0 then return {-1, tostring(wait)} end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(ttl))
return {1, '0'}
"""
)


class TooManyInFlight(Exception):
    def __init__(self, cap: int) -> None:
        super().__init__(f"{cap} requests already in flight for this key")
        self.cap = cap


_script = None
_limited_script = None


def slots_key(key_id: int) -> str:
    return f"agentops:inflight:{key_id}"


def admit(key_id: int, cap: int) -> tuple[int, str]:
    """A slot for one request of this key (pass it to ``release``), or ``TooManyInFlight``."""
    global _script
    slot = uuid.uuid4().hex
    try:
        if _script is None:
            _script = runtime_redis().register_script(ADMIT)
        admitted = _script(keys=[slots_key(key_id)], args=[slot, cap, settings.GATEWAY_IN_FLIGHT_TTL_SECONDS])
    except Exception as exc:  # Redis down: do not turn the fair-share counter into an outage
        log.warning("inflight.unavailable", error=repr(exc)[:200])
        return key_id, slot
    if not int(admitted):
        raise TooManyInFlight(cap)
    return key_id, slot


def admit_within_rate(key_id: int, cap: int, per_minute: int | None = None) -> tuple[int, str]:
    """``admit`` and ``ratelimit.take`` in one Redis call: a slot (pass it to ``release``), or
    ``TooManyInFlight`` (nothing spent), or ``RateLimited`` (no slot taken). Redis unreachable: admitted."""
    global _limited_script
    slot = uuid.uuid4().hex
    rate, burst = limits(per_minute)
    try:
        if _limited_script is None:
            _limited_script = runtime_redis().register_script(ADMIT_WITHIN_RATE)
        ttl = settings.GATEWAY_IN_FLIGHT_TTL_SECONDS
        outcome, wait = _limited_script(
            keys=[slots_key(key_id), bucket_key(key_id)], args=[slot, cap, ttl, rate, burst, now_arg()]
        )
    except Exception as exc:  # Redis down: neither fair-share counter turns into an outage
        log.warning("inflight.unavailable", error=repr(exc)[:200])
        return key_id, slot
    if int(outcome) == 0:
        raise TooManyInFlight(cap)
    if int(outcome) < 0:
        raise RateLimited(float(wait))
    return key_id, slot


def release(slot: tuple[int, str], seen: tuple[str, str] | None = None) -> None:
    """Give the slot back. ``seen`` = (agent, session) marks that session active (agentops.lib.activity) in
    the same round trip when it is due: the request's last Redis command carries it, so the gateway pays no
    extra one."""
    key_id, member = slot
    try:
        if seen is None or not activity.due(*seen):  # most calls: the plain ZREM, no pipeline to build
            runtime_redis().zrem(slots_key(key_id), member)
            return
        pipe = runtime_redis().pipeline(transaction=False)
        pipe.zrem(slots_key(key_id), member)
        activity.add_touch(pipe, *seen)
        pipe.execute()
    except Exception as exc:  # the slot lapses after GATEWAY_IN_FLIGHT_TTL_SECONDS
        log.warning("inflight.release_failed", error=repr(exc)[:200])


def in_flight(key_id: int) -> int:
    """Slots held now (for tests and the ops view)."""
    return int(runtime_redis().zcard(slots_key(key_id)))
