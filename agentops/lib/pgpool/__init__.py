"""The web process's pooled PostgreSQL backend (``DB_POOL``: ENGINE ``agentops.lib.pgpool``, Django's
PostgreSQL backend with one change, base.py): a check of a pooled connection that costs no round trip.

With ``CONN_HEALTH_CHECKS`` Django has the pool run ``ConnectionPool.check_connection`` (an empty query: a
round trip to PostgreSQL) every time a thread takes a connection, and a gateway request takes one per request:
measured ~70 µs of CPU and ~250 µs of waiting each, for a connection that answered a moment ago. An idle
connection has nothing to read, so a readable socket means the server spoke unasked — it closed the
connection (restart, ``pg_terminate_backend``, the postmaster's death) or sent a notice — and only then do
we pay the full check, which fails on a dead connection so the pool opens a fresh one instead.

One dead connection means the others probably died with it (a restart closes them all). psycopg_pool would
find them one checkout at a time and sleep a second after each (its back-off between failed checks), so a
pool of ten dead connections kept requests waiting, and failing at the pool timeout, long after PostgreSQL
was back. The first dead one found therefore has the pool check every idle connection at once.
"""

from __future__ import annotations

import select
import threading

import psycopg
from psycopg_pool import ConnectionPool


def check(conn: psycopg.Connection) -> None:
    """Return if ``conn`` is usable, else raise (the pool discards it)."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the pooled connection is closed")
    poller = select.poll()  # not select.select: a busy process may hold descriptors above FD_SETSIZE
    poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        ConnectionPool.check_connection(conn)


class PoolCheck:
    """psycopg_pool's ``check`` callback for one pool: ``check``, and on a dead connection a sweep of the
    pool's idle connections (``ConnectionPool.check``, which discards the dead and opens replacements)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self._sweeping = threading.Lock()

    def __call__(self, conn: psycopg.Connection) -> None:
        try:
            check(conn)
        except Exception:
            self.sweep()
            raise

    def sweep(self) -> None:
        # Threads that found dead connections at the same moment need one sweep, not one each.
        if not self._sweeping.acquire(blocking=False):
            return
        try:
            self.pool.check()  # catches each connection's failure itself
        finally:
            self._sweeping.release()
