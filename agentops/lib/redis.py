"""One Redis client per process for the runtime (breakers, cache, latency, config version).

Fail fast: redis-py 8 retries a dead connection about ten times with backoff (≈4 s per command). The
runtime has its own safe states for an unreachable Redis (in-memory breaker, cache miss, default
timeout), so one quick attempt is right; a stalled call would cost more than the lost coordination.
"""

from __future__ import annotations

import os
import threading

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

_lock = threading.Lock()
_client: redis.Redis | None = None
_pid: int | None = None


def runtime_redis() -> redis.Redis:
    global _client, _pid
    with _lock:
        if _client is None or _pid != os.getpid():  # a forked child needs its own connection pool
            _client = redis.Redis.from_url(
                settings.REDIS_URL,
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=0.25,
                socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
                health_check_interval=30,
            )
            _pid = os.getpid()
        return _client
