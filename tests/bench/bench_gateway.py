"""The OpenAI-compatible gateway (/v1): latency it adds to the same official `openai` SDK call (AIGatewayBench).

Subject: `client.chat.completions.create` through the gateway (http://<web>/v1, an agent key with the
`gateway` scope) — key check, the per-key Redis token bucket, model resolution, `guarded_llm` (reservation
against a global budget → the default upstream → settle) and the answer. Baseline: the SAME SDK call
straight to the fault-injecting mock (agentops/demo/mock_openai.py) that the gateway forwards to
(OPENAI_BASE_URL), in the same run. Model "mock-small" (in no route: the default upstream answers),
max_tokens=50, default temperature (so never cached).

Concurrency 1, 4 and 16: N threads, each with its own `openai.OpenAI` client (max_retries=0) per target.
Per concurrency: a warm-up, then ROUNDS rounds of a batch of direct calls and a batch of gateway calls
(alternating which goes first); per-request latencies; p50 / p99 per round, medians of rounds. Added
latency = gateway − direct (p50 and p99 separately). Streaming (c=1): time to the first chunk with
non-empty content, direct vs gateway. Informational: the gateway's own `X-Agentops-Overhead-Ms` header.
Goals (issue): added p50 ≤ 2 ms and added p99 ≤ 10 ms at c=1 and c=4; c=16 and streaming are reported.

Everything runs in a database of its own (<db>_bench_gateway, created, migrated and dropped here) and, for
the web process, Redis db REDIS_DB (flushed before and after), so the seeded 100k-token daily budget and
other benches' state play no part: the seeded budgets are disabled and one global daily budget of
BUDGET_TOKENS applies to every call.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import openai
import redis

from tests.bench.common import bench_database, uvicorn_server
from tests.bench.harness import Result, interleaved, median_of_rounds, percentile
from tests.fixtures.runtime import free_port, mock_openai_answers, run_mock_openai_in_background
from tests.fixtures.waiting import wait_for, while_running

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".run" / "bench"

AGENT = "bench-gateway"
MODEL = "mock-small"
MESSAGES = [{"role": "user", "content": "benchmark prompt"}]
MAX_TOKENS = 50
BUDGET_NAME, BUDGET_TOKENS = "bench gateway daily", 10**12
REDIS_DB = int(os.environ.get("BENCH_GATEWAY_REDIS_DB", "11"))

ROUNDS = 6
CONCURRENCY = (1, 4, 16)
GOAL_CONCURRENCY = (1, 4)
REQUESTS = {1: 120, 4: 240, 16: 320}  # per batch (split over the threads), per target, per round
WARMUP = {1: 40, 4: 80, 16: 160}
STREAM_REQUESTS, STREAM_WARMUP = 60, 20  # c=1
GOAL_P50_MS, GOAL_P99_MS = 2.0, 10.0
SERVER_ENV = {
    "API_RATE_BURST": "100000000",
    "API_RATE_PER_SECOND": "100000000",
    "LOG_LEVEL": "WARNING",
    "DB_POOL": "1",
    "OPENAI_API_KEY": "x",
}


@dataclass
class Added(Result):
    """value = added ms (gateway − direct), baseline = direct ms; ratio = gateway / direct."""

    gateway: float = 0.0

    @property
    def ratio(self) -> float:
        return self.gateway / self.baseline if self.baseline else float("inf")


# --- a Redis db of our own ------------------------------------------------------------------------------


@contextmanager
def bench_redis():
    """Redis db REDIS_DB on the same server (flushed before and after); yields its URL."""
    from django.conf import settings

    base = os.environ.get("REDIS_URL") or settings.REDIS_URL
    url = urllib.parse.urlunsplit(urllib.parse.urlsplit(base)._replace(path=f"/{REDIS_DB}"))
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@contextmanager
def mock_openai():
    """The mock on a free loopback port; yields its /v1 base URL."""
    port = free_port()
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / "gateway-mock-openai.log"
    proc = run_mock_openai_in_background(port, log_path=log)
    try:
        root = f"http://127.0.0.1:{port}"
        wait_for(while_running(proc, lambda: mock_openai_answers(root), "the mock", log), timeout=15, interval=0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _setup() -> str:
    """Only the bench's global daily budget applies; an agent key with the gateway scope. Returns the key."""
    from agentops.keys import actions as key_actions
    from budgets.actions import budgets as budget_actions
    from budgets.models import Budget

    Budget.objects.filter(enabled=True).update(enabled=False)  # the seeded 100k/day would run out → 429
    budget_actions.save_budget(
        Budget(
            name=BUDGET_NAME,
            scope=Budget.Scope.GLOBAL,
            period=Budget.Period.DAY,
            timezone="UTC",
            limit_tokens=BUDGET_TOKENS,
            hard_stop=True,
            operation_limits={},
            on_block=Budget.OnBlock.FAIL,
        )
    )
    row, key = key_actions.create_api_key(AGENT, name="bench_gateway", created_by="bench", max_in_flight=64)
    if "gateway" not in row.scopes:
        raise RuntimeError(f"the default scopes {row.scopes} lack 'gateway'")
    return key


def _budget_spend() -> tuple[int, int, int]:
    """(tokens spent on the bench budget's counters, reservations of the agent still held, its ledger rows)."""
    from django.db.models import Sum

    from budgets.models import BudgetCounter, Reservation, UsageRecord

    spent = BudgetCounter.objects.filter(budget__name=BUDGET_NAME).aggregate(t=Sum("spent_tokens"))["t"] or 0
    held = Reservation.objects.filter(agent=AGENT, status=Reservation.Status.HELD).count()
    return int(spent), held, UsageRecord.objects.filter(agent=AGENT).count()


# --- the load --------------------------------------------------------------------------------------------


class Target:
    """One `openai.OpenAI` client per thread against one base URL; per-batch samples and errors."""

    def __init__(self, name: str, base_url: str, api_key: str, lanes: int) -> None:
        self.name = name
        self.clients = [
            openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=30) for _ in range(lanes)
        ]
        self.errors: Counter[str] = Counter()
        self.overheads: list[float] = []  # X-Agentops-Overhead-Ms (gateway only)
        self.lock = threading.Lock()

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def _error(self, exc: Exception) -> None:
        if isinstance(exc, openai.APIStatusError):
            kind = str(exc.status_code)
        elif isinstance(exc, openai.APITimeoutError):
            kind = "timeout"
        elif isinstance(exc, openai.APIConnectionError):
            kind = "connection"
        else:
            kind = type(exc).__name__
        with self.lock:
            self.errors[kind] += 1

    def call(self, client: openai.OpenAI, n: int) -> list[float]:
        """`n` plain completions one after another; ms of each that answered."""
        samples, overheads = [], []
        for _ in range(n):
            started = time.perf_counter()
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS
                )
                completion = raw.parse()
                took = (time.perf_counter() - started) * 1000
            except Exception as exc:
                self._error(exc)
                continue
            if not completion.choices or not completion.choices[0].message.content:
                self._error(RuntimeError("empty answer"))
                continue
            samples.append(took)
            header = raw.headers.get("x-agentops-overhead-ms")
            if header is not None:
                overheads.append(float(header))
        with self.lock:
            self.overheads.extend(overheads)
        return samples

    def first_token(self, client: openai.OpenAI, n: int) -> list[float]:
        """`n` streamed completions; ms until the first chunk with content (each stream read to its end)."""
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            first = None
            try:
                stream = client.chat.completions.create(
                    model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True
                )
                with stream:
                    for chunk in stream:
                        if first is None and chunk.choices and chunk.choices[0].delta.content:
                            first = (time.perf_counter() - started) * 1000
            except Exception as exc:
                self._error(exc)
                continue
            if first is None:
                self._error(RuntimeError("stream without content"))
                continue
            samples.append(first)
        return samples


def batch(pool: ThreadPoolExecutor, target: Target, total: int, stream: bool = False) -> list[float]:
    """`total` requests split over the target's lanes, all lanes at once; the latencies of those that answered."""
    lanes = len(target.clients)
    work = target.first_token if stream else target.call
    futures = [
        pool.submit(work, client, total // lanes + (1 if index < total % lanes else 0))
        for index, client in enumerate(target.clients)
    ]
    return [sample for future in futures for sample in future.result()]


def _check(gateway_url: str, key: str) -> None:
    """The gateway answers from the mock (default upstream, not cached) before it is timed."""
    client = openai.OpenAI(base_url=gateway_url, api_key=key, max_retries=0, timeout=30)
    try:
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
        completion = raw.parse()
    except openai.APIStatusError as exc:
        raise RuntimeError(f"gateway check: {exc.status_code} {exc.response.text[:300]}") from None
    finally:
        client.close()
    handler, cache = raw.headers.get("x-agentops-handler"), raw.headers.get("x-agentops-cache")
    if handler != "primary" or cache == "hit" or raw.headers.get("x-agentops-overhead-ms") is None:
        raise RuntimeError(f"gateway check: handler {handler!r}, cache {cache!r}, headers {dict(raw.headers)}")
    if not completion.choices[0].message.content:
        raise RuntimeError(f"gateway check: empty answer {completion}")


def _measure(direct_url: str, gateway_url: str, key: str, lanes: int, stream: bool = False):
    direct = Target("direct", direct_url, "x", lanes)
    gateway = Target("gateway", gateway_url, key, lanes)
    requests, warmup = (STREAM_REQUESTS, STREAM_WARMUP) if stream else (REQUESTS[lanes], WARMUP[lanes])
    try:
        with ThreadPoolExecutor(lanes) as pool:
            for target in (direct, gateway):  # connections, caches, plans, the thread pools
                batch(pool, target, warmup, stream)
            gateway.overheads.clear()
            direct.errors.clear()
            gateway.errors.clear()
            gw_rounds, direct_rounds = interleaved(
                ROUNDS, lambda: batch(pool, gateway, requests, stream), lambda: batch(pool, direct, requests, stream)
            )
    finally:
        direct.close()
        gateway.close()
    for target, rounds in ((direct, direct_rounds), (gateway, gw_rounds)):
        if any(not samples for samples in rounds):
            raise RuntimeError(f"{target.name} c={lanes}: a round had no answer at all; errors {dict(target.errors)}")
    return direct_rounds, gw_rounds, direct.errors, gateway.errors, gateway.overheads


def _errors_text(direct: Counter, gateway: Counter) -> str:
    if not direct and not gateway:
        return "no errors"
    return f"errors direct {dict(direct) or 'none'}, gateway {dict(gateway) or 'none'}"


def run() -> list[Result]:
    started = time.perf_counter()
    results: list[Result] = []
    overhead_p50: dict[int, float] = {}
    gateway_p50: dict[int, float] = {}
    with bench_database("gateway") as database_env, bench_redis() as redis_url, mock_openai() as mock_url:
        key = _setup()
        env = {
            **SERVER_ENV,
            "DATABASE_URL": database_env["DATABASE_URL"],
            "REDIS_URL": redis_url,
            "OPENAI_BASE_URL": mock_url,
        }
        with uvicorn_server(env) as url:
            gateway_url = url + "/v1"
            _check(gateway_url, key)
            for lanes in CONCURRENCY:
                t0 = time.perf_counter()
                direct, gateway, direct_errors, gateway_errors, overheads = _measure(mock_url, gateway_url, key, lanes)
                clean = not direct_errors and not gateway_errors
                errors = _errors_text(direct_errors, gateway_errors)
                d50, d99 = median_of_rounds(direct), median_of_rounds(direct, 99)
                g50, g99 = median_of_rounds(gateway), median_of_rounds(gateway, 99)
                overhead_p50[lanes], gateway_p50[lanes] = percentile(overheads, 50), g50
                per_round = f"{ROUNDS} rounds of {REQUESTS[lanes]} per target, medians of rounds"
                print(
                    f"  c={lanes}: direct p50 {d50:.2f} p99 {d99:.2f} ms; gateway p50 {g50:.2f} p99 {g99:.2f} ms; "
                    f"header p50 {overhead_p50[lanes]:.2f} ms; {errors} ({time.perf_counter() - t0:.1f} s)",
                    flush=True,
                )
                goal = lanes in GOAL_CONCURRENCY
                for q, d, g, limit in ((50, d50, g50, GOAL_P50_MS), (99, d99, g99, GOAL_P99_MS)):
                    results.append(
                        Added(
                            f"gateway: added p{q} latency, c={lanes} (vs direct SDK)",
                            "ms",
                            g - d,
                            d,
                            f"added <= {limit:.1f}" if goal else "informational",
                            (g - d <= limit and clean) if goal else clean,
                            note=f"gateway p{q} {g:.2f} ms vs direct {d:.2f} ms; {per_round}; {errors}",
                            gateway=g,
                        )
                    )
            t0 = time.perf_counter()
            direct, gateway, direct_errors, gateway_errors, _ = _measure(mock_url, gateway_url, key, 1, stream=True)
            d50, g50 = median_of_rounds(direct), median_of_rounds(gateway)
            errors = _errors_text(direct_errors, gateway_errors)
            print(
                f"  stream c=1: first token direct p50 {d50:.2f} ms, gateway p50 {g50:.2f} ms; {errors} "
                f"({time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
            results.append(
                Added(
                    "gateway: added p50 time to first token, stream, c=1",
                    "ms",
                    g50 - d50,
                    d50,
                    "informational",
                    not direct_errors and not gateway_errors,
                    note=f"gateway p50 {g50:.2f} ms vs direct {d50:.2f} ms (p99 {median_of_rounds(gateway, 99):.2f} vs "
                    f"{median_of_rounds(direct, 99):.2f}); {ROUNDS} rounds of {STREAM_REQUESTS}; {errors}",
                    gateway=g50,
                )
            )
            spent, held, ledger = _budget_spend()
        print(
            f"  budget '{BUDGET_NAME}': {spent} tokens spent, {ledger} ledger rows, {held} reservations not settled; "
            f"bench took {time.perf_counter() - started:.1f} s",
            flush=True,
        )
    results.append(
        Result(
            "gateway: X-Agentops-Overhead-Ms p50, c=1 (vs gw p50)",
            "ms",
            overhead_p50[1],
            gateway_p50[1],
            "informational",
            spent > 0,
            note="the gateway's own account of its time (request in → answer out, minus the upstream call); "
            + ", ".join(f"c={c} {overhead_p50[c]:.2f} ms" for c in CONCURRENCY)
            + f"; budget spend seen {spent} tokens over {ledger} ledger rows",
        )
    )
    return results
