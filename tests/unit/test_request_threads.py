"""Django's request threads are reused (agentops/lib/request_threads.py): a request's sync code runs on a thread
taken from a free list and given back when the request ended normally; a cancelled or failed request's thread
is let go (it may still be running sync code that cannot be interrupted)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async

from agentops.lib.request_threads import ExecutorPool, ReusedThreadsASGIHandler


class Probe(ReusedThreadsASGIHandler):
    """The handler's own ``__call__`` around a ``handle`` that records the thread its sync calls ran on."""

    def __init__(self, keep: int = 4) -> None:  # no middleware chain: ``handle`` below is the request
        self.executors = ExecutorPool(keep=keep)
        self.threads: list[tuple[int, int]] = []

    async def handle(self, scope, receive, send):
        first = await sync_to_async(threading.get_ident)()
        second = await sync_to_async(threading.get_ident)()
        self.threads.append((first, second))
        if scope.get("fail"):
            raise asyncio.CancelledError  # the client went away mid-request


async def request(handler: Probe, **scope) -> None:
    await handler({"type": "http", **scope}, None, None)


async def test_a_request_keeps_one_thread_and_the_next_request_reuses_it():
    handler = Probe()
    await request(handler)
    await request(handler)
    (a1, a2), (b1, b2) = handler.threads
    assert a1 == a2 and b1 == b2  # all of a request's sync calls on one thread (Django's thread-sensitivity)
    assert a1 == b1 and a1 != threading.get_ident()
    assert handler.executors.idle() == 1


async def test_concurrent_requests_get_threads_of_their_own():
    handler = Probe()
    await asyncio.gather(request(handler), request(handler))
    (a, _), (b, _) = handler.threads
    assert a != b and handler.executors.idle() == 2


async def test_a_cancelled_request_lets_its_thread_go():
    handler = Probe()
    with pytest.raises(asyncio.CancelledError):
        await request(handler, fail=True)
    assert handler.executors.idle() == 0
    await request(handler)
    assert handler.threads[0][0] != handler.threads[1][0]


def test_at_most_keep_idle_executors_are_kept():
    pool = ExecutorPool(keep=2)
    taken = [pool.take() for _ in range(3)]
    for executor in taken:
        pool.give_back(executor)
    assert pool.idle() == 2
    assert pool.take() is taken[1]  # the most recently given back first
    with pytest.raises(RuntimeError):
        taken[2].submit(print)  # the one beyond the limit was shut down


def test_websockets_are_not_its_business():
    with pytest.raises(ValueError, match="websocket"):
        asyncio.run(Probe()({"type": "websocket"}, None, None))
