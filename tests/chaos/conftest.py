"""Chaos tests (issue "Proof under fire"): kill -9 Celery workers mid-run, restart Redis and PostgreSQL under
load, take the budget store away, hang a provider. Everything is real: the project-local PostgreSQL and Redis
of the test profile (agentops/devtools/services.py) are stopped and started again in place, keeping their data.

Because they restart those services, the tests run only where the run owns them: under `make test` / `make chaos`
(the launcher starts and stops the services itself), or when CHAOS_SCALE is set explicitly; and only against
the services the test profile started under .run/test (DATABASE_URL / REDIS_URL pointing elsewhere: skipped).
A plain `pytest tests/` beside other people's test sessions on shared services therefore skips them.

Scale: bounded by default (part of `make test`); `CHAOS_SCALE=long` (`make chaos`) raises the runs, the kills
and the restarts. `CHAOS_SEED` replays one random schedule (every test prints the seed it used).

Every test adds a row to the table printed at the end of the session (and written to
test-results/chaos/summary.json): runs, kills/restarts, terminal states, duplicate effects, re-executed steps,
records lost.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from redis.exceptions import RedisError

from agentops.config.source import config_source
from agentops.devtools import services
from tests.chaos.harness import AGENT_MODULES, LONG, SUMMARY, chaos_rows, format_table, reconnect_database
from tests.fixtures.stack import REPO_ROOT, Proc, reseed_runtime, start_process, start_web, start_worker
from tests.fixtures.waiting import wait_for, while_running


@dataclass(frozen=True)
class Scale:
    """How hard the chaos tests push: bounded for `make test`, long for `make chaos`."""

    name: str
    kill_runs: int  # runs executing while workers are killed
    kills: int
    restart_runs: int  # runs started through the REST API across the Redis and PostgreSQL restarts
    restarts: int  # restarts of each service
    down_seconds: float  # how long a restarted service stays away
    hung_runs: int  # runs whose primary model hangs
    settle_timeout: float  # how long every run may take to reach a terminal state after the chaos


SHORT = Scale(
    "short", kill_runs=200, kills=3, restart_runs=60, restarts=1, down_seconds=2.0, hung_runs=8, settle_timeout=120.0
)
LONG_SCALE = Scale(
    "long", kill_runs=1000, kills=12, restart_runs=300, restarts=3, down_seconds=4.0, hung_runs=30, settle_timeout=600.0
)


@pytest.fixture(scope="session")
def scale() -> Scale:
    return LONG_SCALE if LONG else SHORT


@pytest.fixture
def rng(request) -> random.Random:
    """A seeded random source; the seed is printed with the test's row (CHAOS_SEED replays it)."""
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 10**6))
    request.node.chaos_seed = seed
    return random.Random(seed)


# --- the project-local services, restarted in place ------------------------------------------------------
def _port(url: str) -> int | None:
    return urllib.parse.urlparse(url).port


class LocalServices:
    """Stop and start the test profile's PostgreSQL and Redis (.run/test), keeping their data."""

    def __init__(self, prof: services.Profile):
        self.prof = prof
        self.restarts: dict[str, int] = {"redis": 0, "postgres": 0}

    # Redis runs without persistence in the test profile: SHUTDOWN SAVE writes a snapshot that the new server
    # loads, so this is a restart (queues, unacked messages, breakers and counters survive), not a wipe.
    def stop_redis(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.prof.redis_port, socket_timeout=10)
        try:
            client.shutdown(save=True)
        except redis.exceptions.ConnectionError:
            pass  # the server closes the connection as it exits
        finally:
            client.close()
        wait_for(
            lambda: not services.port_open(self.prof.redis_port), timeout=20, interval=0.05, message="Redis to stop"
        )

    def start_redis(self) -> None:
        services.redis_up(self.prof)
        self._forget_snapshot()
        self.restarts["redis"] += 1

    def _forget_snapshot(self) -> None:
        """The snapshot only carried the data across this restart: the next session starts empty as before."""
        client = redis.Redis(host="127.0.0.1", port=self.prof.redis_port, socket_timeout=5)
        try:
            # it answers once the snapshot is in; until then it refuses or answers LOADING
            wait_for(client.ping, timeout=20, interval=0.05, message="Redis to load its data", ignore=(RedisError,))
        finally:
            client.close()
        (self.prof.home / "redis" / "dump.rdb").unlink(missing_ok=True)

    def stop_postgres(self) -> None:
        services.pg_down(self.prof)  # pg_ctl stop -m fast: clients are disconnected, data is kept
        wait_for(
            lambda: not services.port_open(self.prof.pg_port), timeout=30, interval=0.05, message="PostgreSQL to stop"
        )

    def start_postgres(self) -> None:
        services.pg_up(self.prof)
        self.restarts["postgres"] += 1

    def restart(self, which: str, down_seconds: float) -> None:
        stop, start = (
            (self.stop_redis, self.start_redis) if which == "redis" else (self.stop_postgres, self.start_postgres)
        )
        stop()
        try:
            time.sleep(down_seconds)  # the outage itself: the load goes on meanwhile
        finally:
            start()


@pytest.fixture(scope="session")
def local_services() -> LocalServices:
    if os.environ.get("AGENTOPS_TEST_PROFILE") != "test" and not os.environ.get("CHAOS_SCALE"):
        pytest.skip(
            "chaos tests restart PostgreSQL and Redis, so they run only where the run owns them: `make test` and "
            "`make chaos` (which start and stop the services themselves); set CHAOS_SCALE=short (or long) to run "
            "them against test services nobody else is using"
        )
    prof = services.profile("test")
    database_url, redis_url = os.environ.get("DATABASE_URL", ""), os.environ.get("REDIS_URL", "")
    ours = (
        _port(database_url) == prof.pg_port
        and _port(redis_url) == prof.redis_port
        and (prof.home / "pg" / "PG_VERSION").exists()
        and (prof.home / "redis" / "redis.pid").exists()
    )
    if not ours:
        pytest.skip(
            "chaos tests restart PostgreSQL and Redis: they run only against the test profile's own services "
            f"(ports {prof.pg_port} / {prof.redis_port} under {prof.home}); start them with "
            "`python -m agentops.devtools.services up test` or run `make test`"
        )
    return LocalServices(prof)


@pytest.fixture(autouse=True)
def _services_up_again(request):
    """Whatever a test did, the next one finds both services running (a failed test may leave one stopped)."""
    yield
    if "local_services" in request.fixturenames:
        chaos = request.getfixturevalue("local_services")
        if not services.port_open(chaos.prof.redis_port):
            chaos.start_redis()
        if not services.port_open(chaos.prof.pg_port):
            chaos.start_postgres()
        reconnect_database()


# --- our own processes: two workers, beat, a web server ---------------------------------------------------
@dataclass
class ChaosStack:
    env: dict
    logdir: Path
    workers: dict[str, Proc] = field(default_factory=dict)
    beat: Proc | None = None
    web: Proc | None = None
    _serial: int = 0

    def start_worker(self, slot: str) -> Proc:
        """A worker (prefork, concurrency 2) in `slot`; a new hostname each time (a killed one never answers)."""
        self._serial += 1
        proc = start_worker(self.env, self.logdir, name=f"chaos-{slot}{self._serial}", concurrency=2)
        self.workers[slot] = proc
        return proc

    def ensure_workers(self, slots=("a", "b")) -> list[str]:
        """Start a worker in every slot whose worker is gone, as a process supervisor (systemd, Kubernetes)
        would; returns the exited workers' names with their exit codes."""
        exited = []
        for slot in slots:
            proc = self.workers.get(slot)
            if proc is not None and proc.popen.poll() is not None:
                exited.append(f"{proc.name} (exit {proc.popen.returncode})")
            if proc is None or proc.popen.poll() is not None:
                self.start_worker(slot)
        return exited

    def pool_pids(self, slot: str) -> list[int]:
        parent = self.workers[slot].popen.pid
        found = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
        return [int(pid) for pid in found]

    def kill_worker(self, slot: str) -> list[int]:
        """kill -9 the whole worker: its parent and every pool process. Returns the pids killed."""
        proc = self.workers[slot]
        pids = [proc.popen.pid, *self.pool_pids(slot)]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.popen.wait(10)
        return pids

    @staticmethod
    def kill_pool_process(pid: int) -> list[int]:
        """kill -9 one pool process of a worker (its parent forks a new one)."""
        os.kill(pid, signal.SIGKILL)
        return [pid]

    def stop(self) -> None:
        for proc in [*self.workers.values(), self.beat, self.web]:
            if proc is not None:
                proc.stop()


@pytest.fixture(scope="session")
def chaos_env(stack_env, mock_openai) -> dict:
    """The processes' environment: short leases and a beat that reclaims every second, so recovery is quick."""
    return {
        **stack_env,
        "AGENTOPS_AGENT_MODULES": ",".join(AGENT_MODULES),
        "LOG_LEVEL": "WARNING",
        "RECLAIM_EVERY": "1",
        "EXPIRE_EVERY": "1",
        "RECLAIM_RESERVATIONS_EVERY": "1",
        "BUDGET_RESERVATION_LEASE_SECONDS": "10",  # a reservation orphaned by a crash is given back soon
        "RUN_REQUEUE_SECONDS": "5",  # a run whose message was lost is sent again soon
        "SETTLE_PARKED_EVERY": "1",
        "DB_CONNECT_TIMEOUT": "2",
        "OPENAI_BASE_URL": mock_openai.base_url,
        "OPENAI_API_KEY": "sk-chaos",
    }


@pytest.fixture(scope="package")
def chaos_stack(local_services, chaos_env, logdir, tmp_path_factory) -> Iterator[ChaosStack]:
    """Two Celery workers, celery beat and a uvicorn web server of our own (the session's shared ones are never
    killed), on the test database and the test Redis. Package scope: they are stopped as soon as the session
    moves on to other tests, whose own workers would otherwise find their tasks taken by ours (started with
    other settings); the browser test, sorted to the end of the session, gets a stack of its own."""
    stack = ChaosStack(chaos_env, logdir)
    try:
        stack.ensure_workers()
        schedule = tmp_path_factory.mktemp("beat") / "celerybeat-schedule"
        stack.beat = start_process(
            "chaos-beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "agentops.celery",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(schedule),
            ],
            chaos_env,
            logdir,
        )
        stack.web = start_web(chaos_env, logdir)
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def stack(chaos_stack) -> ChaosStack:
    """The chaos stack with both workers alive (a test before may have killed one) and the web ready (a test
    before may have restarted PostgreSQL under it)."""
    chaos_stack.ensure_workers()
    web = chaos_stack.web

    def ready() -> bool:
        return httpx.get(web.extra["url"] + "/readyz", timeout=5).status_code == 200

    wait_for(while_running(web.popen, ready, "the web server's /readyz", web.log), timeout=60, interval=0.05)
    return chaos_stack


# --- the table -------------------------------------------------------------------------------------------
def pytest_terminal_summary(terminalreporter):
    if not chaos_rows:
        return
    terminalreporter.section("chaos")
    for text in format_table(chaos_rows):
        terminalreporter.write_line(text)
    terminalreporter.write_line(f"(also in {SUMMARY.relative_to(REPO_ROOT)})")


@pytest.fixture
def chaos_db(transactional_db, redis_client, settings):
    """Committed rows (the stack's processes see them) with the runtime seed put back and reloaded everywhere."""
    settings.AGENTOPS_AGENT_MODULES = AGENT_MODULES
    reseed_runtime()
    config_source().invalidate()
