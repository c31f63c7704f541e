"""Long-polling without holding a thread: wait on a Channels group for "something changed", re-read the
database, answer when the state changed or the time is up.

The channel layer delivers at most once (and drops messages over capacity or when Redis blips), so the
state is also re-read every ``RECHECK_SECONDS`` whatever the socket says; a layer that cannot be reached
degrades to that polling alone. Only the coroutine waits: no worker thread is held in between reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from channels.layers import get_channel_layer

log = structlog.get_logger(__name__)

T = TypeVar("T")

RECHECK_SECONDS = 2.0


async def wait_for_change(
    group: str,
    read: Callable[[], Awaitable[T]],
    changed: Callable[[T], bool],
    timeout: float,
    *,
    relevant: Callable[[dict], bool] | None = None,
    recheck: float = RECHECK_SECONDS,
) -> T:
    """Return ``await read()`` as soon as ``changed`` holds for it, or the last read at ``timeout`` seconds.

    Listens on ``group`` (events sent by agentops.lib.live); each event — or only those whose ``data``
    ``relevant`` accepts — triggers a re-read, and so does every ``recheck`` seconds of silence.
    """
    current = await read()
    if timeout <= 0 or changed(current):
        return current
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    layer, channel = await _subscribe(group)
    try:
        # Read again once subscribed: a change between the first read and group_add sent no event to us.
        current = await read()
        last_read = loop.time()
        while not changed(current):
            now = loop.time()
            remaining = deadline - now
            if remaining <= 0:
                break
            wait = min(remaining, max(0.0, last_read + recheck - now))
            message = None
            if channel is not None:
                try:
                    message = await asyncio.wait_for(layer.receive(channel), wait)
                except TimeoutError:
                    message = None
                except Exception as exc:  # the layer broke mid-wait: fall back to polling
                    log.warning("longpoll.receive_failed", group=group, error=repr(exc)[:200])
                    channel = None
                    await asyncio.sleep(min(wait, 0.5))
            else:
                await asyncio.sleep(wait)
            irrelevant = message is not None and relevant is not None and not relevant(message.get("data") or {})
            if irrelevant and loop.time() - last_read < recheck:
                continue
            current = await read()
            last_read = loop.time()
        return current
    finally:
        if channel is not None:
            try:
                await layer.group_discard(group, channel)
            except Exception as exc:  # the membership expires with the layer's group_expiry anyway
                log.debug("longpoll.discard_failed", group=group, error=repr(exc)[:200])


async def _subscribe(group: str):
    layer = get_channel_layer()
    if layer is None:
        return None, None
    try:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
    except Exception as exc:
        log.warning("longpoll.subscribe_failed", group=group, error=repr(exc)[:200])
        return layer, None
    return layer, channel
