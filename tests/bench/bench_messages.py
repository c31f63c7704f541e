"""The gateway's Anthropic door (/v1/messages): latency it adds to the same official `anthropic` SDK call.

Subject: `client.messages.create` through the gateway (http://<web>, an agent key with the `gateway` scope):
key check, the per-key rate limit, validation and translation, `guarded_llm` (reservation against a global
budget → the upstream → settle) and the message back. Baseline: the SAME SDK call straight to the
fault-injecting mock's /v1/messages (agentops/demo/mock_anthropic.py), in the same run, interleaved.

- **native** (the goal): model "claude-bench", served by a Provider of kind `anthropic` whose base URL is
  the mock: the gateway sends the client's body to the mock's /v1/messages through the anthropic SDK and
  passes its message back. Concurrency 1, 4 and 16, as bench_gateway measures chat completions.
- **translated** (c=1, informational): model "mock-small" (the default upstream, chat completions): the
  request is translated to a chat completion and the answer back; the baseline stays the direct Messages
  call, so this row is the whole cost of the other path.
- **stream** (c=1, informational): time to the first text delta, native.

Goals (issue 16: "the same goals as chat completions"): added p50 ≤ 2 ms and added p99 ≤ 10 ms at c=1 and
c=4; c=16 and the rest are reported. Its own database (<db>_bench_messages) and Redis db REDIS_DB.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import anthropic

from tests.bench import bench_gateway as gw
from tests.bench.common import bench_database, uvicorn_server
from tests.bench.harness import Result, interleaved, median_of_rounds, percentile

NATIVE, TRANSLATED = "claude-bench", "mock-small"
MESSAGES = [{"role": "user", "content": "benchmark prompt"}]
MAX_TOKENS = 50
REDIS_DB = int(os.environ.get("BENCH_MESSAGES_REDIS_DB", "12"))
ROUNDS = 6
CONCURRENCY = (1, 4, 16)
GOAL_CONCURRENCY = (1, 4)
REQUESTS = {1: 120, 4: 240, 16: 320}
WARMUP = {1: 40, 4: 80, 16: 160}
STREAM_REQUESTS, STREAM_WARMUP = 60, 20
GOAL_P50_MS, GOAL_P99_MS = 2.0, 10.0


def _setup(mock_root: str) -> str:
    """The bench budget and key (bench_gateway's), and the mock as a native Anthropic provider."""
    from agentops.config.models import Provider
    from agentops.config.source import bump_version

    key = gw._setup()
    Provider.objects.update_or_create(
        name="bench-anthropic",
        defaults={"kind": "anthropic", "base_url": mock_root, "api_key": "x", "served_models": NATIVE},
    )
    bump_version()
    return key


class Target:
    """One `anthropic.Anthropic` client per thread against one root URL; errors and overhead headers."""

    def __init__(self, name: str, root: str, api_key: str, lanes: int, model: str) -> None:
        self.name, self.model = name, model
        self.clients = [
            anthropic.Anthropic(base_url=root, api_key=api_key, max_retries=0, timeout=30) for _ in range(lanes)
        ]
        self.errors: Counter[str] = Counter()
        self.overheads: list[float] = []
        self.lock = threading.Lock()

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def _error(self, exc: Exception) -> None:
        kind = str(exc.status_code) if isinstance(exc, anthropic.APIStatusError) else type(exc).__name__
        with self.lock:
            self.errors[kind] += 1

    def call(self, client: anthropic.Anthropic, n: int) -> list[float]:
        samples, overheads = [], []
        for _ in range(n):
            started = time.perf_counter()
            try:
                raw = client.messages.with_raw_response.create(
                    model=self.model, max_tokens=MAX_TOKENS, messages=MESSAGES
                )
                message = raw.parse()
                took = (time.perf_counter() - started) * 1000
            except Exception as exc:
                self._error(exc)
                continue
            if not message.content or not message.content[0].text or not message.usage.output_tokens:
                self._error(RuntimeError("empty answer"))
                continue
            samples.append(took)
            if raw.headers.get("x-agentops-overhead-ms") is not None:
                overheads.append(float(raw.headers["x-agentops-overhead-ms"]))
        with self.lock:
            self.overheads.extend(overheads)
        return samples

    def first_token(self, client: anthropic.Anthropic, n: int) -> list[float]:
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            first = None
            try:
                with client.messages.stream(model=self.model, max_tokens=MAX_TOKENS, messages=MESSAGES) as stream:
                    for text in stream.text_stream:
                        if first is None and text:
                            first = (time.perf_counter() - started) * 1000
            except Exception as exc:
                self._error(exc)
                continue
            if first is None:
                self._error(RuntimeError("stream without text"))
                continue
            samples.append(first)
        return samples


def batch(pool: ThreadPoolExecutor, target: Target, total: int, stream: bool) -> list[float]:
    lanes = len(target.clients)
    work: Callable = target.first_token if stream else target.call
    futures = [
        pool.submit(work, client, total // lanes + (1 if index < total % lanes else 0))
        for index, client in enumerate(target.clients)
    ]
    return [sample for future in futures for sample in future.result()]


def _measure(mock_root: str, gateway_root: str, key: str, lanes: int, model: str, stream: bool = False):
    direct = Target("direct", mock_root, "x", lanes, NATIVE)
    gateway = Target("gateway", gateway_root, key, lanes, model)
    requests, warmup = (STREAM_REQUESTS, STREAM_WARMUP) if stream else (REQUESTS[lanes], WARMUP[lanes])
    try:
        with ThreadPoolExecutor(lanes) as pool:
            for target in (direct, gateway):
                batch(pool, target, warmup, stream)
            for target in (direct, gateway):
                target.errors.clear()
                target.overheads.clear()
            gw_rounds, direct_rounds = interleaved(
                ROUNDS, lambda: batch(pool, gateway, requests, stream), lambda: batch(pool, direct, requests, stream)
            )
    finally:
        direct.close()
        gateway.close()
    for target, rounds in ((direct, direct_rounds), (gateway, gw_rounds)):
        if any(not samples for samples in rounds):
            raise RuntimeError(f"{target.name} c={lanes}: a round had no answer; errors {dict(target.errors)}")
    return direct_rounds, gw_rounds, direct.errors + gateway.errors, gateway.overheads


def _rows(label: str, lanes: int, direct, gateway, errors: Counter, goal: bool, requests: int) -> list[Result]:
    clean = not errors
    text = f"errors {dict(errors)}" if errors else "no errors"
    rows = []
    for q, limit in ((50, GOAL_P50_MS), (99, GOAL_P99_MS)):
        d, g = median_of_rounds(direct, q), median_of_rounds(gateway, q)
        rows.append(
            gw.Added(
                f"messages: {label} added p{q}, c={lanes} (vs direct SDK)",
                "ms",
                g - d,
                d,
                f"added <= {limit:.1f}" if goal else "informational",
                (g - d <= limit and clean) if goal else clean,
                note=f"gateway p{q} {g:.2f} ms vs direct {d:.2f} ms; {ROUNDS} rounds of {requests}; {text}",
                gateway=g,
            )
        )
    return rows


def run() -> list[Result]:
    started = time.perf_counter()
    results: list[Result] = []
    gw.REDIS_DB = REDIS_DB
    with bench_database("messages") as database_env, gw.bench_redis() as redis_url, gw.mock_openai() as mock_url:
        mock_root = mock_url.removesuffix("/v1")
        key = _setup(mock_root)
        env = {
            **gw.SERVER_ENV,
            "DATABASE_URL": database_env["DATABASE_URL"],
            "REDIS_URL": redis_url,
            "OPENAI_BASE_URL": mock_url,
        }
        with uvicorn_server(env) as root:
            for lanes in CONCURRENCY:
                t0 = time.perf_counter()
                direct, gateway, errors, overheads = _measure(mock_root, root, key, lanes, NATIVE)
                results += _rows("native", lanes, direct, gateway, errors, lanes in GOAL_CONCURRENCY, REQUESTS[lanes])
                print(
                    f"  native c={lanes}: direct p50 {median_of_rounds(direct):.2f} p99 "
                    f"{median_of_rounds(direct, 99):.2f}; gateway p50 {median_of_rounds(gateway):.2f} p99 "
                    f"{median_of_rounds(gateway, 99):.2f} ms; header p50 {percentile(overheads, 50):.2f} ms; "
                    f"errors {dict(errors)} ({time.perf_counter() - t0:.1f} s)",
                    flush=True,
                )
            direct, gateway, errors, _ = _measure(mock_root, root, key, 1, TRANSLATED)
            results += _rows("translated to chat", 1, direct, gateway, errors, False, REQUESTS[1])
            print(f"  translated c=1: gateway p50 {median_of_rounds(gateway):.2f} ms", flush=True)
            direct, gateway, errors, _ = _measure(mock_root, root, key, 1, NATIVE, stream=True)
            results += _rows("native stream first text", 1, direct, gateway, errors, False, STREAM_REQUESTS)[:1]
            print(f"  stream c=1: first text gateway p50 {median_of_rounds(gateway):.2f} ms", flush=True)
            spent, held, ledger = gw._budget_spend()
        print(
            f"  budget: {spent} tokens spent, {ledger} ledger rows, {held} reservations not settled; "
            f"bench took {time.perf_counter() - started:.1f} s",
            flush=True,
        )
    results.append(
        Result(
            "messages: ledger rows written (vs calls answered)",
            "rows",
            ledger,
            ledger,
            "every call settled",
            spent > 0 and held == 0,
            note=f"{spent} tokens on the bench budget, {held} reservations left held",
        )
    )
    return results
