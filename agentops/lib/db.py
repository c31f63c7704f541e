"""Database helpers shared by the code that outlives a PostgreSQL restart (workers, the budget settle)."""

from __future__ import annotations

from django.db import connection


def discard_connection() -> None:
    """Drop this thread's connection (the server may have closed it); the next query opens a new one."""
    try:
        connection.close()
    except Exception:  # a connection the server closed may refuse even to close
        connection.connection = None
