"""The web process's pool checks a connection by its socket (agentops/lib/pgpool): a live idle connection costs
no round trip, a connection the server closed is refused so the pool opens another."""

from __future__ import annotations

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
