"""Shared pieces for benchmarks: a real uvicorn server and a bounded concurrent HTTP load."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.parse
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.fixtures.stack import start_web

ROOT = Path(__file__).resolve().parents[2]


def migrate(env: dict | None = None) -> None:
    """manage.py migrate in a child process (on env's DATABASE_URL when given)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _point_at(name: str) -> None:
    from django.conf import settings
    from django.db import connection

    connection.close()
    settings.DATABASES["default"]["NAME"] = name
    connection.settings_dict["NAME"] = name


@contextmanager
def bench_database(suffix: str):
    """Create and migrate <db>_bench_<suffix>, point this process at it; yield the environment of a child
    process on it (DATABASE_URL set). The database is dropped afterwards."""
    from django.conf import settings
    from django.db import connection

    original = settings.DATABASES["default"]["NAME"]
    name = f"{original}_bench_{suffix}"[:63]
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(os.environ.get("DATABASE_URL") or settings.DATABASE_URL)
    url = urllib.parse.urlunsplit(parts._replace(path="/" + name))
    env = {**os.environ, "DATABASE_URL": url, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "WARNING"}
    try:
        started = time.perf_counter()
        migrate(env)
        print(f"  bench database {name} migrated in {time.perf_counter() - started:.1f} s", flush=True)
        _point_at(name)
        yield env
    finally:
        _point_at(original)
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds: every process a bench starts ends this way."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextmanager
def bench_worker(name: str, queue: str, env: dict, *extra: str):
    """One Celery worker process (prefork, concurrency 1) consuming only the bench's private ``queue``, its log in
    .run/bench/worker-<name>.log; ``extra`` are more worker arguments (e.g. ``-I module``). Yields the process
    once it answers a ping; stops it after."""
    from agentops.celery import app
    from tests.fixtures.waiting import wait_for, while_running

    hostname = f"bench-{name}-{uuid.uuid4().hex[:6]}@%h"
    log = ROOT / ".run" / "bench" / f"worker-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "celery", "-A", "agentops.celery", "worker", "--concurrency", "1", "--pool"]
    cmd += ["prefork", "-Q", queue, "--hostname", hostname, *extra, "--loglevel", "WARNING"]
    cmd += ["--without-gossip", "--without-mingle"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env={**env, "LOG_LEVEL": "WARNING"}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        short = hostname.split("@")[0]

        def answered() -> bool:
            return any(short in host for reply in app.control.ping(timeout=0.5) for host in reply)

        wait_for(while_running(proc, answered, f"the bench worker (see {log})", log), timeout=60, interval=0)
        yield proc
    finally:
        stop_process(proc, 20)
