"""Django's PostgreSQL backend whose connection pool checks connections with ``agentops.lib.pgpool.check``."""

from __future__ import annotations

from django.db.backends.postgresql.base import DatabaseWrapper as PostgresDatabaseWrapper
from psycopg_pool import ConnectionPool

from agentops.lib.pgpool import PoolCheck


class DatabaseWrapper(PostgresDatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        # Django builds the pool with check=ConnectionPool.check_connection when CONN_HEALTH_CHECKS is on and
        # refuses a `check` among the pool options, so the check is swapped once the pool exists (before it
        # opens: Django opens it on the first connect). tests/integration/test_pgpool.py fails if psycopg_pool
        # renames it.
        if pool is not None and pool._check is ConnectionPool.check_connection:
            pool._check = PoolCheck(pool)
        return pool
