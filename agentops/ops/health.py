"""Dependency checks shared by /readyz and the ops page. Each returns a Check, never raises. The Celery app is
the current one (AgentopsConfig.ready() makes the project's app current in every process)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from celery import current_app
from django.conf import settings
from django.db import connection

from agentops import wiring
from agentops.lib import broker
from agentops.lib.redis import runtime_redis
from agentops.runtime.timeouts import p95


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
    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=settings.READYZ_TIMEOUT)


def run_checks() -> list[Check]:
    return [
        _timed("database", _database),
        _timed("redis", lambda: _redis_ping(settings.REDIS_URL)),
        _timed("broker", _broker),
    ]


def ping_workers(timeout: float = 1.0) -> list[str]:
    """Names of Celery workers that answered a broadcast ping within `timeout` seconds."""
    try:
        replies = current_app.control.ping(timeout=timeout) or []
    except Exception:
        return []
    return sorted(name for reply in replies for name in reply)


def queue_depths() -> dict[str, int]:
    """Messages waiting in each Celery queue, read from the broker (empty when it cannot be read)."""
    return broker.queue_depths(timeout=settings.READYZ_TIMEOUT) or {}


def adaptive_timeouts_in_force(limit: int = 50) -> list[dict]:
    """Per operation and model: samples seen, their p95 and the timeout the guard uses now."""
    deps = wiring.guard_deps()
    adaptive, config = deps.adaptive, deps.config.get()
    rows = []
    try:
        keys = sorted(runtime_redis().scan_iter(match="agentops:latency:*", count=200))[:limit]
    except Exception:
        return rows
    for raw in keys:
        operation, _, model = raw.decode().removeprefix("agentops:latency:").partition(":")
        samples = adaptive.samples(operation, model)
        rows.append(
            {
                "operation": operation,
                "model": model,
                "samples": len(samples),
                "p95": round(p95(samples), 3) if samples else None,
                "timeout": round(adaptive.timeout_for(operation, model, config.timeouts.llm), 2),
                "adaptive": len(samples) >= adaptive.settings.min_samples,
            }
        )
    return rows
