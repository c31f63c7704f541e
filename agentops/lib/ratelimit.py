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

# KEYS[1] bucket; ARGV: rate per second, burst, now (s). Returns {allowed, seconds until a token is back}.
TAKE = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= 1 then
    tokens = tokens - 1
    allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
if allowed == 1 then return {1, '0'} end
return {0, tostring((1 - tokens) / rate)}
"""


class RateLimited(Exception):
    def __init__(self, retry_after: float):
        super().__init__(f"rate limited; retry after {retry_after:.2f} s")
        self.retry_after = retry_after


_script = None


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
            keys=[f"agentops:ratelimit:{key_id}"],
            args=[rate, burst, f"{time.time():.6f}"],
        )
    except Exception as exc:  # Redis down: do not turn a limiter outage into an API outage
        log.warning("ratelimit.unavailable", error=repr(exc)[:200])
        return
    if not int(allowed):
        raise RateLimited(float(wait))
