"""Publish "something changed" events to Channels groups, only after the transaction commits.

Groups: review.queue, review.experts, run.<id>, runs, alerts, budgets (spend moved), ops (who may listen to
which is decided beside the socket consumer, in agentops/accounts/consumers.py). Every
process (web or Celery worker) sends through one long-lived event loop in a daemon thread, so the
channel layer keeps one Redis connection pool per process instead of opening one per send (the
async_to_sync trap of channels-redis 4: a new loop per call, and "Event loop is closed" on the next one).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import Future

import structlog
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.db import transaction

from agentops.observability import metrics

log = structlog.get_logger(__name__)

SEND_TIMEOUT = 5.0
BATCH = 256  # events taken off the queue at once: one membership round trip for all their groups


def group_kind(group: str) -> str:
    return group.split(".", 1)[0] if group.startswith("run.") else group


class _Sender:
    """A private event loop living for the whole process, draining one queue of events in order.

    One coroutine sends one event at a time, so a burst of thousands of publishes uses one Redis
    connection instead of exhausting the pool, and events reach a group in the order they were made.
    """

    MAX_BACKLOG = 10_000  # if Redis is down this long, older signals are useless: pages reconcile anyway

    def __init__(self):
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._pid: int | None = None

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            # After a fork (Celery prefork) the parent's thread does not exist in the child.
            if self._loop is None or self._pid != os.getpid():
                self._loop = asyncio.new_event_loop()
                self._queue = asyncio.Queue()
                self._pid = os.getpid()
                threading.Thread(
                    target=self._run, args=(self._loop, self._queue), name="agentops-live", daemon=True
                ).start()
            return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        asyncio.set_event_loop(loop)
        loop.create_task(_Sender._drain(queue))
        loop.run_forever()

    @staticmethod
    async def _drain(queue: asyncio.Queue) -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < BATCH:
                batch.append(queue.get_nowait())
            try:
                listened = await _listened(group for group, *_ in batch)
            except Exception:  # the sends below meet the same error and log it per event
                listened = None
            for group, event, data, done in batch:
                try:
                    if listened is None or group in listened:
                        await _send(group, event, data)
                except Exception as exc:
                    log.warning("live.send_failed", group=group, live_event=event, error=repr(exc))
                    if not done.done():
                        done.set_exception(exc)
                else:
                    if not done.done():
                        done.set_result(None)

    def _enqueue(self, item) -> None:
        if self._queue.qsize() >= self.MAX_BACKLOG:
            dropped = self._queue.get_nowait()
            dropped[3].set_result(None)
            log.warning("live.backlog_dropped", group=dropped[0], live_event=dropped[1])
        self._queue.put_nowait(item)

    def submit(self, group: str, event: str, data: dict) -> Future:
        loop = self._ensure_started()
        done: Future = Future()
        loop.call_soon_threadsafe(self._enqueue, (group, event, data, done))
        return done


_sender = _Sender()


def _layer():
    return get_channel_layer()


async def _listened(groups) -> set[str] | None:
    """Which of ``groups`` have a socket in them, asked in one pipelined round trip (None: the layer is not
    channels-redis, so every event is sent). A group_send to a group nobody listens to still costs two
    round trips (expire old members, read members); most run and step events have no listener."""
    layer = _layer()
    if not isinstance(layer, RedisChannelLayer):
        return None
    by_connection: dict[int, list[str]] = {}
    for group in set(groups):
        by_connection.setdefault(layer.consistent_hash(group), []).append(group)
    expired = int(time.time()) - layer.group_expiry
    listened: set[str] = set()
    for index, names in by_connection.items():
        pipe = layer.connection(index).pipeline(transaction=False)
        for group in names:
            key = layer._group_key(group)
            pipe.zremrangebyscore(key, min=0, max=expired)
            pipe.zcard(key)
        counts = (await pipe.execute())[1::2]
        listened.update(group for group, count in zip(names, counts, strict=True) if count)
    return listened


async def _send(group: str, event: str, data: dict) -> None:
    await _layer().group_send(group, {"type": "live.event", "group": group, "event": event, "data": data})


def send_now(group: str, event: str, data: dict | None = None, *, wait: bool = False) -> None:
    """Send immediately (outside any transaction). Failures are logged, never raised: a lost event is
    repaired by the page reconciling on reconnect. `wait` blocks until this event was handed to Redis."""
    done = _sender.submit(group, event, data or {})
    metrics.LIVE_EVENTS.labels(group=group_kind(group)).inc()
    if wait:
        try:
            done.result(timeout=SEND_TIMEOUT)
        except Exception as exc:
            log.warning("live.send_failed", group=group, live_event=event, error=repr(exc))


def publish(group: str, event: str, data: dict | None = None) -> None:
    """Announce a change to `group` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: send_now(group, event, data), robust=True)
