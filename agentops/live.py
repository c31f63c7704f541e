"""Publish "something changed" events to Channels groups, only after the transaction commits.

Groups: review.queue, review.experts, run.<id>, alerts, ops. Every process (web or Celery worker)
sends through one long-lived event loop in a daemon thread, so the channel layer keeps one Redis
connection pool per process instead of opening one per send (the async_to_sync trap of
channels-redis 4: a new loop per call, and "Event loop is closed" on the next one).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import structlog
from django.db import transaction

from agentops.observability import metrics

log = structlog.get_logger(__name__)

STATIC_GROUPS = {"review.queue", "review.experts", "alerts", "ops"}
SEND_TIMEOUT = 5.0


def group_kind(group: str) -> str:
    return group.split(".", 1)[0] if group.startswith("run.") else group


def group_allowed(user, group: str) -> bool:
    """May this user listen to this group? (Runs and the queue for reviewers, etc.)"""
    from agentops import roles

    if group == "ops":
        return roles.can_open(user, "ops")
    if group == "alerts":
        return roles.can_open(user, "budgets")
    if group == "review.queue":
        return roles.can_open(user, "queue")
    if group == "review.experts":
        return user.is_superuser or roles.EXPERT in roles.user_roles(user)
    if group.startswith("run.") and group[4:].isdigit():
        return roles.can_open(user, "runs")
    return False


class _LoopThread:
    """A private event loop living for the whole process; coroutines are submitted to it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None

    def submit(self, coro) -> Future:
        import os

        with self._lock:
            # After a fork (Celery prefork) the parent's thread does not exist in the child.
            if self._loop is None or self._pid != os.getpid():
                self._loop = asyncio.new_event_loop()
                self._pid = os.getpid()
                threading.Thread(target=self._loop.run_forever, name="agentops-live", daemon=True).start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop)


_loop_thread = _LoopThread()


def _layer():
    from channels.layers import get_channel_layer

    return get_channel_layer()


async def _send(group: str, event: str, data: dict) -> None:
    await _layer().group_send(group, {"type": "live.event", "group": group, "event": event, "data": data})


def send_now(group: str, event: str, data: dict | None = None, *, wait: bool = False) -> None:
    """Send immediately (outside any transaction). Failures are logged, never raised: a lost event is
    repaired by the page reconciling on reconnect."""
    future = _loop_thread.submit(_send(group, event, data or {}))
    metrics.LIVE_EVENTS.labels(group=group_kind(group)).inc()
    if wait:
        try:
            future.result(timeout=SEND_TIMEOUT)
        except Exception as exc:
            log.warning("live.send_failed", group=group, live_event=event, error=repr(exc))
    else:
        future.add_done_callback(
            lambda f: (
                f.exception()
                and log.warning("live.send_failed", group=group, live_event=event, error=repr(f.exception()))
            )
        )


def publish(group: str, event: str, data: dict | None = None) -> None:
    """Announce a change to `group` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: send_now(group, event, data), robust=True)
