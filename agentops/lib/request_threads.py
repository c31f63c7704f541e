"""Django's ASGI handler with request threads that are reused, as a threaded WSGI server reuses its threads.

Django runs each request's sync code (sync views, the ORM, sync middleware) inside a thread-sensitive context of
its own, and asgiref gives every such context a new ``ThreadPoolExecutor``: one thread started for the request,
and a second started afterwards to join the first. py-spy on ``POST /api/v1/actions`` put the two at about an
eighth of the web process's CPU, and a new thread also builds its own database connection wrappers.

asgiref (3.10 on) lets the caller supply the context's executor and leaves it running on exit, so this hands
each request a single-thread executor from a free list: still one request at a time on a thread and all of a
request's sync calls on that one thread, which is what Django's thread-sensitivity asks for. Django's own
request-end handling still returns the request's database connection to the pool.

An executor goes back on the list only after its request ended normally, when every sync call it made has
returned. A cancelled or failed request may leave its thread busy (sync code cannot be interrupted), so that
executor is shut down without waiting instead of making a later request queue behind it.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler

KEEP_IDLE = 64  # more than a 2-core web process ever runs at once; beyond it, threads are let go


class ExecutorPool:
    def __init__(self, keep: int = KEEP_IDLE) -> None:
        self.keep = keep
        self._free: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()

    def take(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._free:
                return self._free.pop()  # the most recently used: its thread and connection are warm
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(executor)
                return
        executor.shutdown(wait=False)

    def discard(self, executor: ThreadPoolExecutor) -> None:
        executor.shutdown(wait=False)  # its thread ends once its current call returns

    def idle(self) -> int:
        with self._lock:
            return len(self._free)


class ReusedThreadsASGIHandler(ASGIHandler):
    """``ASGIHandler`` whose requests run their sync code on threads taken from ``executors``."""

    executors = ExecutorPool()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self.executors.take()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        except BaseException:
            self.executors.discard(executor)
            raise
        self.executors.give_back(executor)
