"""Which sessions had traffic lately: one Redis sorted set of sessions scored by when each was last seen.

A session is the caller's label within its agent (``X-Session-Id``, a run's session, a usage report's
``session_id``); calls that name none count as one session of their agent. Writers add or refresh their
member (one ZADD, with a trim of members gone stale, in one pipelined round trip that callers may share
with a command of their own); ``active_sessions`` trims on read and counts what is left, so
`agent_active_sessions` is the same number whichever process is scraped. Like the rate limiter, an
unreachable Redis loses a touch (logged), never the request.

A process refreshes one session at most every TOUCH_EVERY_SECONDS: a busy session's calls then cost no
Redis command at all (measured: the pipelined touch made the gateway's slot release about 0.2 ms slower on
this machine's Redis client), and "active in the last 5 minutes" is exact to within those seconds.
"""

from __future__ import annotations

import threading
import time

import structlog

from agentops.lib.redis import runtime_redis

log = structlog.get_logger(__name__)

SESSIONS_KEY = "agentops:sessions:seen"
ACTIVE_WINDOW_SECONDS = 300.0
# Members older than this are dropped on every write too, so the set stays bounded when nobody scrapes.
KEEP_SECONDS = ACTIVE_WINDOW_SECONDS

TOUCH_EVERY_SECONDS = 30.0
_TOUCHED_MAX = 10_000  # sessions remembered per process; forgotten all at once when full (a touch too many)
_touched: dict[str, float] = {}
_touched_lock = threading.Lock()

# The wall clock of the process (scores from every process are compared: keep machines on NTP). Tests
# move it instead of sleeping.
clock = time.time


def member(agent: str, session: str) -> str:
    """The set's member for one session of one agent (a session id is only unique within its agent)."""
    return f"{agent}\t{session}"


def due(agent: str, session: str) -> bool:
    """Whether this process should refresh (agent, session) now (not done in the last TOUCH_EVERY_SECONDS);
    answering True counts as the refresh."""
    key, now = member(agent, session), clock()
    with _touched_lock:
        last = _touched.get(key)
        if last is not None and 0 <= now - last < TOUCH_EVERY_SECONDS:
            return False
        if len(_touched) >= _TOUCHED_MAX:
            _touched.clear()
        _touched[key] = now
        return True


def add_touch(pipe, agent: str, session: str) -> None:
    """Queue the touch of (agent, session) on ``pipe`` (a redis pipeline): ZADD, trim and expiry."""
    now = clock()
    pipe.zadd(SESSIONS_KEY, {member(agent, session): now})
    pipe.zremrangebyscore(SESSIONS_KEY, "-inf", now - KEEP_SECONDS)
    pipe.expire(SESSIONS_KEY, int(KEEP_SECONDS))


def touch(agent: str, session: str) -> None:
    """(agent, session) had traffic now: one pipelined round trip, unless this process refreshed it lately."""
    if not due(agent, session):
        return
    try:
        pipe = runtime_redis().pipeline(transaction=False)
        add_touch(pipe, agent, session)
        pipe.execute()
    except Exception as exc:  # a lost touch only lowers a gauge for a while; never fail the caller for it
        log.warning("activity.touch_failed", error=repr(exc)[:200])


def active_sessions() -> int | None:
    """Sessions seen in the last ACTIVE_WINDOW_SECONDS (older members are trimmed first); None if Redis is away."""
    try:
        pipe = runtime_redis().pipeline(transaction=False)
        pipe.zremrangebyscore(SESSIONS_KEY, "-inf", clock() - ACTIVE_WINDOW_SECONDS)
        pipe.zcard(SESSIONS_KEY)
        return int(pipe.execute()[1])
    except Exception as exc:
        log.warning("activity.unreadable", error=repr(exc)[:200])
        return None
