"""Shared pieces for benchmarks: a real uvicorn server and a bounded concurrent HTTP load."""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.fixtures.stack import start_web

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def uvicorn_server(extra_env: dict | None = None):
    """The real ASGI app under uvicorn on a free loopback port (the tests' launcher); yields its base URL."""
    env = {**os.environ, "AGENTOPS_BENCH_ENDPOINTS": "1", "LOG_LEVEL": "WARNING", **(extra_env or {})}
    logdir = ROOT / ".run" / "bench"
    logdir.mkdir(parents=True, exist_ok=True)
    proc = start_web(env, logdir)
    try:
        yield proc.extra["url"]
    finally:
        proc.stop()


async def _load(url: str, requests: int, concurrency: int, method: str = "GET", **kwargs) -> tuple[list[float], float]:
    """Send `requests` requests with `concurrency` in flight; return per-request ms and elapsed s."""
    latencies: list[float] = []
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def lane():
            for _ in remaining:
                started = time.perf_counter()
                response = await client.request(method, url, **kwargs)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code >= 500:
                    raise RuntimeError(f"{url} answered {response.status_code}")

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


def load(url: str, requests: int, concurrency: int, **kwargs) -> tuple[list[float], float]:
    return asyncio.run(_load(url, requests, concurrency, **kwargs))
