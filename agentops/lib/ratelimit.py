"""Per-key token bucket in Redis (one Lua call per request): ``API_RATE_PER_SECOND`` tokens a second up to
``API_RATE_BURST``, or a key's own ``per_minute`` (``ApiKey.rate_per_minute``): that many tokens a minute, up
to a minute's worth at once. A request with no token left raises ``RateLimited`` with the seconds until one is back.
If Redis is unreachable the request is allowed: the limiter protects the service, it is not a budget
(budgets fail closed; see budgets/actions.py)."""

from __future__ import annotations

import time

import structlog
from django.conf import settings

from agentops.lib.redis import runtime_redis

log = structlog.get_logger(__name__)

# The bucket as a Lua function, shared by TAKE and by the gateway's admission (agentops/lib/inflight.py), which
# takes a token and an in-flight slot in one round trip. Returns allowed (1/0), seconds until a token is back.
BUCKET = """
local function take_token(key, rate, burst, now)
    local state = redis.call('HMGET', key, 'tokens', 'at')
    local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
    tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
    local allowed = 0
    if tokens >= 1 then
        tokens = tokens - 1
        allowed = 1
    end
    redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
    redis.call('EXPIRE', key, math.ceil(burst / rate) + 1)
    if allowed == 1 then return 1, 0 end
    return 0, (1 - tokens) / rate
end
"""

# KEYS[1] bucket; ARGV: rate per second, burst, now (s). Returns {allowed, seconds until a token is back}.
TAKE = (
    BUCKET
    + """
local allowed, wait = take_token(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return {allowed, tostring(wait)}
"""
)


class RateLimited(Exception):
    def __init__(self, retry_after: float):
        super().__init__(f"rate limited; retry after {retry_after:.2f} s")
        self.retry_after = retry_after


_script = None


def bucket_key(key_id: int) -> str:
    return f"agentops:ratelimit:{key_id}"


def now_arg() -> str:
    """The bucket's clock (this process's), as the scripts take it."""
    return f"{time.time():.6f}"


def limits(per_minute: int | None = None) -> tuple[float, float]:
    """(tokens a second, burst) of a bucket: the key's own rate when it has one, else the global default."""
    if per_minute:
        return per_minute / 60.0, float(per_minute)
    return settings.API_RATE_PER_SECOND, float(settings.API_RATE_BURST)


def take(key_id: int, per_minute: int | None = None) -> None:
    """Spend one token of this key's bucket, or raise RateLimited. ``per_minute``: the key's own rate."""
    global _script
    rate, burst = limits(per_minute)
    try:
        if _script is None:
            _script = runtime_redis().register_script(TAKE)
        allowed, wait = _script(
            keys=[bucket_key(key_id)],
            args=[rate, burst, now_arg()],
        )
    except Exception as exc:  # Redis down: do not turn a limiter outage into an API outage
        log.warning("ratelimit.unavailable", error=repr(exc)[:200])
        return
    if not int(allowed):
        raise RateLimited(float(wait))
