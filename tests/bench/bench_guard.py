"""Guard wrapper overhead: ``guarded_llm`` vs a direct ``openai`` SDK call to the same mock server.

Subject: ``guarded_llm`` with the production hot path — real Redis breaker (closed), adaptive timeouts with
the default 1 s in-process cache and latency samples written by the background recorder, an operation that
is not cacheable (no cache look-up), the first attempt answers — through ``OpenAICompatProvider`` to the
fault-injecting mock (its ASGI app under uvicorn in a subprocess, as its ``main()`` serves it but with a long
keep-alive; see ``_mock_openai``).
Baseline: ``openai.OpenAI(base_url=mock, max_retries=0).chat.completions.create(...)``, same model,
messages and ``max_tokens``. Both at concurrency 1 and 16 (threads sharing one provider / one client).

A further row at concurrency 1 measures a *cacheable* operation that misses (unique prompt per call): key
hashing, the Redis GET+PTTL look-up and the SET of the answer on top of the hot path.

Logging is configured as in the real processes (``django.setup()`` imported ``agentops.settings``: structlog
JSON through the root logger's stream handler); for the duration of the benchmark that handler's stream is
swapped to a file (``.run/bench/bench_guard.log``, truncated each run) so every ``llm.call`` line is still
rendered and written, but not to the terminal. (The SDK's transport also logs one INFO line per request,
logger ``httpx2``, which the logging config does not quieten; it costs both sides the same.)
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import openai
import redis

from agentops.runtime.cache import CACHE_SPECS, TwoLevelCache
from agentops.runtime.config import RuntimeConfig, StaticConfigSource
from agentops.runtime.guard import GuardDeps, guarded_llm, make_breaker_registry
from agentops.runtime.providers import LLMRequest, OpenAICompatProvider
from agentops.runtime.routing import Target
from agentops.runtime.timeouts import AdaptiveTimeouts
from tests.bench.common import stop_process
from tests.bench.harness import Result, interleaved, median_of_rounds
from tests.fixtures.runtime import fail_fast_redis, free_port, mock_openai_answers
from tests.fixtures.waiting import wait_for, while_running

ROOT = Path(__file__).resolve().parents[2]
LOG_FILE = ROOT / ".run" / "bench" / "bench_guard.log"

ROUNDS = 8
CALLS = {1: 200, 16: 600}  # calls per round at each concurrency
CACHED_MISS_CALLS = 200
KEEP_ALIVE_SECONDS = 120
CONCURRENCY = (1, 16)
MODEL = "mock-small"
OPERATION = "bench_guard"  # not in cacheable_operations: no cache look-up
CACHED_OPERATION = "bench_guard_cached"
MAX_TOKENS = 64
MESSAGES = [{"role": "user", "content": "Summarise the benchmark in one short sentence."}]
PREFIX = "agentops:bench:"  # every Redis key of this benchmark; deleted before and after

CONFIG = RuntimeConfig(
    routes=(),
    default_chain=(Target("mock", MODEL),),
    rules=(),
    use_human=False,
    cacheable_operations=frozenset({CACHED_OPERATION}),
    version="bench",
)


def run() -> list[Result]:
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        raise RuntimeError("REDIS_URL is not set (run through `make bench` / agentops.devtools.launch bench)")
    client = fail_fast_redis(redis_url)
    _delete_bench_keys(client)
    try:
        with _mock_openai() as base_url, _logs_to(LOG_FILE), ThreadPoolExecutor(max(CONCURRENCY)) as pool:
            return _measure(client, base_url, pool)
    finally:
        _delete_bench_keys(client)
        client.close()


def _measure(client: redis.Redis, base_url: str, pool: ThreadPoolExecutor) -> list[Result]:
    source = StaticConfigSource(CONFIG)
    deps = GuardDeps(
        config=source,
        providers={"mock": OpenAICompatProvider("mock", base_url, "bench")},
        breakers=make_breaker_registry(client, source, key_prefix=PREFIX + "breaker:", names_key=PREFIX + "breakers"),
        cache=TwoLevelCache(client, CACHE_SPECS["llm_responses"], key_prefix=PREFIX + "cache:"),
        adaptive=AdaptiveTimeouts(client, CONFIG.adaptive, key_prefix=PREFIX + "latency:"),
        record_latency_in_background=True,
    )
    deps.breakers.get("mock", MODEL).reset()  # closed, no failures
    direct = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=30.0)
    request = LLMRequest(MESSAGES, operation=OPERATION, max_tokens=MAX_TOKENS)
    unexpected: list[str] = []

    def guarded() -> None:
        result = guarded_llm(request, deps=deps)
        if result.handler != "primary" or result.attempts != 1:
            unexpected.append(f"{result.handler}/{result.attempts}/{result.error_class}")

    def plain() -> None:
        direct.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)

    # Cacheable but always missing: a fresh prompt per call (the baseline sends the same prompts).
    guarded_prompts, direct_prompts = itertools.count(), itertools.count()

    def guarded_miss() -> None:
        text = f"Unique question number {next(guarded_prompts)} for the cache-miss path."
        miss = LLMRequest([{"role": "user", "content": text}], operation=CACHED_OPERATION, max_tokens=MAX_TOKENS)
        result = guarded_llm(miss, deps=deps)
        if result.handler != "primary" or result.cache_hit:
            unexpected.append(f"miss path: {result.handler}/cache_hit={result.cache_hit}")

    def plain_miss() -> None:
        text = f"Unique question number {next(direct_prompts)} for the cache-miss path."
        direct.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=MAX_TOKENS)

    # Warm up: connection pools up to 16 connections, the breaker's Lua script, the adaptive-timeout cache.
    for concurrency in CONCURRENCY:
        _round(pool, guarded, 200, concurrency)
        _round(pool, plain, 200, concurrency)
    deps.latency.flush()
    unexpected.clear()

    results: list[Result] = []
    per_call: dict[str, float] = {}
    for concurrency in CONCURRENCY:
        rps: dict[str, list[float]] = {"subject": [], "baseline": []}
        before = _redis_calls(client)
        subject, baseline = interleaved(
            ROUNDS,
            _measured(pool, guarded, CALLS[concurrency], concurrency, rps["subject"]),
            _measured(pool, plain, CALLS[concurrency], concurrency, rps["baseline"]),
        )
        deps.latency.flush()
        after = _redis_calls(client)
        calls = ROUNDS * CALLS[concurrency]
        per_call = {k: (after.get(k, 0) - before.get(k, 0)) / calls for k in after}
        results += _rows(f"c={concurrency}", subject, baseline, rps, per_call)

    rps = {"subject": [], "baseline": []}
    subject, baseline = interleaved(
        ROUNDS,
        _measured(pool, guarded_miss, CACHED_MISS_CALLS, 1, rps["subject"]),
        _measured(pool, plain_miss, CACHED_MISS_CALLS, 1, rps["baseline"]),
    )
    deps.latency.flush()
    results += _rows("c=1 cache miss", subject, baseline, rps, None)[:1]

    measured = ROUNDS * (sum(CALLS.values()) + CACHED_MISS_CALLS)
    if len(unexpected) > measured // 200:
        raise RuntimeError(f"{len(unexpected)} guarded calls did not take the hot path, e.g. {unexpected[:5]}")
    lines = _count_log_lines(LOG_FILE)
    expected = 200 * len(CONCURRENCY) + measured  # warm-up included
    log_note = f"{lines} llm.call log lines (expected {expected}) written to {LOG_FILE.relative_to(ROOT)}"
    if unexpected:
        log_note += f"; {len(unexpected)} calls off the hot path (in the figures): {sorted(set(unexpected))[:3]}"
    print(
        f"  bench_guard: {log_note}; Redis commands per guarded call at c=16, Lua-internal ones included: {_fmt(per_call)}",
        flush=True,
    )
    for r in results:
        r.note = f"{r.note}; {log_note}" if r.note else log_note
    return results


def _rows(
    label: str,
    subject: list[list[float]],
    baseline: list[list[float]],
    rps: dict[str, list[float]],
    per_call: dict[str, float] | None,
) -> list[Result]:
    p50, base50 = median_of_rounds(subject), median_of_rounds(baseline)
    p95, base95 = median_of_rounds(subject, 95), median_of_rounds(baseline, 95)
    tput, base_tput = _median(rps["subject"]), _median(rps["baseline"])
    note = f"added p50 {p50 - base50:+.3f} ms"
    if per_call is not None:
        note += f"; Redis commands per guarded call (Lua-internal included): {_fmt(per_call)}"
    return [
        Result(
            f"guard: p50 latency, {label} (vs direct SDK)",
            "ms",
            p50,
            base50,
            "added p50 <= 1 ms",
            p50 - base50 <= 1.0,
            p95=p95,
            baseline_p95=base95,
            note=note,
        ),
        Result(
            f"guard: throughput, {label} (vs direct SDK)",
            "req/s",
            tput,
            base_tput,
            "ratio >= 0.90",
            tput / base_tput >= 0.90,
        ),
    ]


def _measured(
    pool: ThreadPoolExecutor, call: Callable[[], None], calls: int, concurrency: int, throughput: list[float]
) -> Callable[[], list[float]]:
    def one_round() -> list[float]:
        latencies, rate = _round(pool, call, calls, concurrency)
        throughput.append(rate)
        return latencies

    return one_round


def _round(
    pool: ThreadPoolExecutor, call: Callable[[], None], calls: int, concurrency: int
) -> tuple[list[float], float]:
    """`calls` calls with `concurrency` in flight (threads of `pool`); per-call ms and calls per second."""
    latencies: list[float] = []
    remaining = iter(range(calls))  # shared by the lanes: next() on a range iterator is atomic under the GIL
    clock = time.perf_counter_ns

    def lane() -> None:
        for _ in remaining:
            started = clock()
            call()
            latencies.append((clock() - started) / 1e6)

    started = time.perf_counter()
    if concurrency == 1:
        lane()
    else:
        for future in [pool.submit(lane) for _ in range(concurrency)]:
            future.result()
    return latencies, calls / (time.perf_counter() - started)


@contextmanager
def _mock_openai() -> Iterator[str]:
    """The mock under uvicorn as `python -m agentops.demo.mock_openai` runs it (uvloop, httptools, no
    access log), but with a long keep-alive: uvicorn's default 5 s closes pooled connections that sit idle
    while the other side of the comparison runs, and a request racing that close fails (a retry)."""
    port = free_port()
    log = ROOT / ".run" / "bench" / f"mock_openai-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "agentops.demo.mock_openai:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--lifespan",
        "off",
        "--no-access-log",
        "--log-level",
        "warning",
        "--timeout-keep-alive",
        str(KEEP_ALIVE_SECONDS),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    try:
        wait_for(while_running(proc, lambda: mock_openai_answers(root), "the mock", log), timeout=60, interval=0.05)
        yield root + "/v1"
    finally:
        stop_process(proc)


@contextmanager
def _logs_to(path: Path) -> Iterator[None]:
    """Point the root logger's stream handlers (the JSON renderer's output) at `path` for a while."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    with path.open("w", encoding="utf-8") as out:
        previous = [(h, h.stream) for h in handlers]
        for h in handlers:
            h.setStream(out)
        try:
            yield
        finally:
            for h, stream in previous:
                h.setStream(stream)


def _count_log_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as f:
        return sum(1 for line in f if '"llm.call"' in line)


def _redis_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value.get("calls", 0)) for name, value in stats.items()}


def _fmt(per_call: dict[str, float]) -> str:
    shown = {k: v for k, v in sorted(per_call.items()) if v >= 0.005 and k != "info"}
    return ", ".join(f"{k} {v:.2f}" for k, v in shown.items()) or "none"


def _delete_bench_keys(client: redis.Redis) -> None:
    keys = list(client.scan_iter(match=PREFIX + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.unlink(*keys[start : start + 500])


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]
