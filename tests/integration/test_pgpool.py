"""The web process's pool checks a connection by its socket (agentops/lib/pgpool): a live idle connection costs
no round trip, a connection the server closed is refused so the pool opens another."""

from __future__ import annotations

import select

import psycopg
import pytest
from django.db import connection
from psycopg_pool import ConnectionPool

from agentops.lib import pgpool
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.django_db


def connect() -> psycopg.Connection:
    s = connection.settings_dict
    return psycopg.connect(
        dbname=s["NAME"], user=s["USER"], password=s["PASSWORD"], host=s["HOST"], port=s["PORT"], autocommit=True
    )


def test_a_live_idle_connection_passes_without_a_query(monkeypatch):
    def no_round_trip(conn):
        raise AssertionError("the full check ran")

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(no_round_trip))
    with connect() as conn:
        conn.execute("SELECT 1")
        pgpool.check(conn)


def test_a_connection_the_server_closed_is_refused():
    with connect() as victim, connect() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [victim.info.backend_pid])

        def refused() -> bool:
            try:
                pgpool.check(victim)
            except psycopg.Error:
                return True
            return False

        wait_for(refused, timeout=5, message="the check to refuse the terminated connection")


def test_the_backend_swaps_the_check_psycopg_pool_keeps():
    """base.py replaces the pool's private ``_check``: fail here, not in production, if psycopg_pool renames it."""
    pool = ConnectionPool("", open=False, check=ConnectionPool.check_connection)
    assert pool._check is ConnectionPool.check_connection


def test_after_a_restart_the_first_checkout_clears_every_dead_connection():
    """A restart kills every pooled connection. psycopg_pool alone finds them one checkout at a time, sleeping
    a second after each, so with six dead a checkout failed at its 2 s pool timeout (readyz said 503 long
    after PostgreSQL was back). The first dead one found now has the pool check all the others."""
    s = connection.settings_dict
    conninfo = psycopg.conninfo.make_conninfo(
        dbname=s["NAME"], user=s["USER"], password=s["PASSWORD"], host=s["HOST"], port=s["PORT"]
    )
    pool = ConnectionPool(conninfo, min_size=1, max_size=8, timeout=2, open=False)
    pool._check = pgpool.PoolCheck(pool)
    pool.open(wait=True)
    try:
        held = [pool.getconn() for _ in range(6)]
        pids = [conn.info.backend_pid for conn in held]
        for conn in held:
            conn.commit()
            pool.putconn(conn)
        with connect() as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
        wait_for(
            lambda: all(socket_readable(conn) for conn in held),
            timeout=5,
            message="the terminated connections' sockets to say so",
        )
        for _ in range(3):
            with pool.connection() as conn:
                assert conn.info.backend_pid not in pids
                conn.execute("SELECT 1")
        assert pool.get_stats()["connections_lost"] >= len(pids) - 1
    finally:
        pool.close()


def socket_readable(conn: psycopg.Connection) -> bool:
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))
