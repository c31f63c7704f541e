"""Dependency checks shared by /readyz and the ops page. Each returns a Check, never raises."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import connection


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    ms: float
    error: str = ""

    def as_dict(self) -> dict:
        data = {"ok": self.ok, "ms": round(self.ms, 2)}
        if self.error:
            data["error"] = self.error
        return data


def _timed(name: str, probe) -> Check:
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # a check reports any failure; it never raises
        return Check(name, False, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}"[:300])
    return Check(name, True, (time.perf_counter() - started) * 1000)


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _redis_ping(url: str) -> None:
    timeout = settings.READYZ_TIMEOUT
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


def _broker() -> None:
    from agentops.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=settings.READYZ_TIMEOUT)


def run_checks() -> list[Check]:
    return [
        _timed("database", _database),
        _timed("redis", lambda: _redis_ping(settings.REDIS_URL)),
        _timed("broker", _broker),
    ]


def ping_workers(timeout: float = 1.0) -> list[str]:
    """Names of Celery workers that answered a broadcast ping within `timeout` seconds."""
    from agentops.celery import app

    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception:
        return []
    return sorted(name for reply in replies for name in reply)
