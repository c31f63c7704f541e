"""The OpenAI-compatible gateway (/v1): latency it adds to the same official `openai` SDK call, side by side with
the physical limit of a Python proxy and with the LiteLLM proxy (AIGatewayBench; issue 19 item 1).

Four targets, one mock (agentops/demo/mock_openai.py, raw ASGI under uvicorn, ~1 ms a call), the same SDK call
(`client.chat.completions.create`, model "mock-small", max_tokens=50, default temperature so never cached):

- direct: straight to the mock — the reference every "added" is measured from;
- bare passthrough (tests/bench/passthrough.py): a raw ASGI app, no framework, no auth, no guard, that forwards
  the body bytes through ONE pooled `httpx.AsyncClient` (HTTP/1.1 keep-alive, created at startup) and returns
  status, content-type and body (SSE relayed chunk by chunk). Served by the SAME command line as the gateway's
  web process (`python -m uvicorn <app> --host 127.0.0.1 --port N --no-access-log`: uvicorn's defaults,
  uvloop + httptools, 1 process). The physical limit of a Python gateway;
- gateway: http://<web>/v1 with an agent key (`gateway` scope) — key check, per-key Redis token bucket, model
  resolution, `guarded_llm` (reservation against a global budget → the default upstream, OPENAI_BASE_URL = the
  mock → settle, ledger row) and the answer; the web process as tests/fixtures/stack.py `start_web` runs it;
- LiteLLM proxy 1.106.2, 1 worker (tests/bench/litellm_proxy.py says exactly how: its own venv, a fixed master
  key, no database, spend/error logs off, no callbacks/telemetry, LITELLM_LOG=ERROR, httptools as for the
  others). When it cannot be installed or started, its rows are reported as failed with the reason.

Concurrency 1, 4 and 16: N threads, each with its own `openai.OpenAI` client (max_retries=0) per target. Per
concurrency: a warm-up of every target, then ROUNDS rounds; each round runs one batch per target, one target
after another, the order rotated every round (each target takes each place ROUNDS/4 times); per-request
latencies, p50 / p99 per round, medians of rounds. "Added" of a subject = its p50 − the direct p50 (medians of
the same rounds). Goals (issue 19): gateway added p50 ≤ 2× the bare passthrough's and ≤ ⅓ of LiteLLM's, at
each concurrency. Informational: added p99; streaming (c=1) time to the first chunk with content; the gateway's
own `X-Agentops-Overhead-Ms` header.

Everything runs in a database of its own (<db>_bench_gateway, created, migrated and dropped here) and, for
the web process, Redis db REDIS_DB (flushed before and after), so the seeded 100k-token daily budget and
other benches' state play no part: the seeded budgets are disabled and one global daily budget of
BUDGET_TOKENS applies to every call.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import openai
import redis

from tests.bench import litellm_proxy
from tests.bench.common import bench_database, stop_process, uvicorn_server
from tests.bench.harness import Result, median_of_rounds, percentile
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

ROUNDS = 8  # 4 targets, the order rotated each round: each target takes each place twice
CONCURRENCY = (1, 4, 16)
REQUESTS = {1: 60, 4: 100, 16: 160}  # per batch (split over the threads), per target, per round
WARMUP = {1: 20, 4: 40, 16: 64}
STREAM_REQUESTS, STREAM_WARMUP = 30, 10  # c=1
GOAL_BARE_FACTOR, GOAL_LITELLM_SHARE = 2.0, 1 / 3
SUBJECTS = ("bare", "gateway", "litellm")  # each measured as added latency over "direct"
LABEL = {"direct": "direct", "bare": "bare passthrough", "gateway": "gateway", "litellm": "LiteLLM"}
SERVER_ENV = {
    "API_RATE_BURST": "100000000",
    "API_RATE_PER_SECOND": "100000000",
    "LOG_LEVEL": "WARNING",
    "DB_POOL": "1",
    "OPENAI_API_KEY": "x",
}


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
        stop_process(proc)


@contextmanager
def passthrough_server(mock_url: str):
    """tests/bench/passthrough.py under the web process's uvicorn command line (start_web's flags, the app
    swapped), forwarding to the mock; yields its /v1 base URL."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "tests.bench.passthrough:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-access-log"]
    log = LOGS / "gateway-passthrough.log"
    env = {**os.environ, "PASSTHROUGH_UPSTREAM": mock_url}
    with log.open("ab") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        root = f"http://127.0.0.1:{port}"
        wait_for(while_running(proc, lambda: _healthy(root), "the bare passthrough", log), timeout=30, interval=0.05)
        yield root + "/v1"
    finally:
        stop_process(proc)


def _healthy(root: str) -> bool:
    try:
        return httpx.get(root + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


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


def _check_gateway(gateway_url: str, key: str) -> None:
    """The gateway answers from the mock (default upstream, not cached) before it is timed."""
    raw = _answer("gateway", gateway_url, key)
    handler, cache = raw.headers.get("x-agentops-handler"), raw.headers.get("x-agentops-cache")
    if handler != "primary" or cache == "hit" or raw.headers.get("x-agentops-overhead-ms") is None:
        raise RuntimeError(f"gateway check: handler {handler!r}, cache {cache!r}, headers {dict(raw.headers)}")


def _answer(name: str, base_url: str, key: str):
    """One completion through `base_url`, which must carry content; the raw response."""
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)
    try:
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
        completion = raw.parse()
    except openai.APIStatusError as exc:
        raise RuntimeError(f"{name} check: {exc.status_code} {exc.response.text[:300]}") from None
    finally:
        client.close()
    if not completion.choices or not completion.choices[0].message.content:
        raise RuntimeError(f"{name} check: empty answer {completion}")
    return raw


def _litellm(stack: ExitStack, mock_url: str) -> tuple[str | None, str]:
    """Start the LiteLLM proxy inside `stack` and check it answers with content from the mock: (its /v1 URL,
    "") or (None, why not) — a failure is reported in the rows, never skipped silently."""
    try:
        url = stack.enter_context(litellm_proxy.litellm_server(mock_url, free_port()))
        raw = _answer("LiteLLM", url, litellm_proxy.MASTER_KEY)
    except (litellm_proxy.Unavailable, RuntimeError, openai.OpenAIError, OSError) as exc:
        reason = " ".join(str(exc).split())[:400]
        print(f"  LiteLLM unavailable: {reason}", flush=True)
        return None, f"LiteLLM failed: {reason}"
    if raw.headers.get("x-litellm-version") != litellm_proxy.VERSION:
        return None, f"LiteLLM failed: answered as version {raw.headers.get('x-litellm-version')!r}"
    return url, ""


def rotated(rounds: int, batches: dict[str, Callable[[], list[float]]]) -> dict[str, list[list[float]]]:
    """`rounds` rounds of one batch per target, one target after another, the order rotated by one each round
    (no target always runs first, or always right after the same one); the samples per target per round."""
    names = list(batches)
    samples: dict[str, list[list[float]]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(batches[name]())
    return samples


def _measure(urls: dict[str, tuple[str, str]], lanes: int, stream: bool = False):
    """Every target of `urls` ({name: (base URL, key)}) at `lanes` threads: ({name: samples per round},
    {name: errors}, the gateway's overhead headers)."""
    targets = {name: Target(name, url, key, lanes) for name, (url, key) in urls.items()}
    requests, warmup = (STREAM_REQUESTS, STREAM_WARMUP) if stream else (REQUESTS[lanes], WARMUP[lanes])
    try:
        with ThreadPoolExecutor(lanes) as pool:
            for target in targets.values():  # connections, caches, plans, the thread pools
                batch(pool, target, warmup, stream)
                target.errors.clear()
                target.overheads.clear()
            rounds = rotated(
                ROUNDS,
                {name: (lambda t=target: batch(pool, t, requests, stream)) for name, target in targets.items()},
            )
    finally:
        for target in targets.values():
            target.close()
    for name, samples in rounds.items():
        if any(not round_samples for round_samples in samples):
            raise RuntimeError(f"{name} c={lanes}: a round had no answer at all; errors {dict(targets[name].errors)}")
    return rounds, {name: target.errors for name, target in targets.items()}, targets["gateway"].overheads


def _errors_text(errors: dict[str, Counter]) -> str:
    if not any(errors.values()):
        return "no errors"
    return "errors " + ", ".join(f"{name} {dict(counter)}" for name, counter in errors.items() if counter)


def _added(p: dict[str, float]) -> dict[str, float]:
    """Each subject's figure minus the direct call's, from the same rounds."""
    return {name: p[name] - p["direct"] for name in p if name != "direct"}


def _listing(values: dict[str, float], names, fmt: str) -> str:
    return ", ".join(f"{LABEL[name]} {values[name]:{fmt}}" for name in names if name in values)


def _rows(lanes: int, p50: dict, p99: dict, errors: dict[str, Counter], litellm_failure: str) -> list[Result]:
    """The two goal rows (vs bare, vs LiteLLM) and the informational p99 row of one concurrency."""
    added, added99 = _added(p50), _added(p99)
    clean = {name: not counter for name, counter in errors.items()}
    per_round = f"{ROUNDS} rounds of {REQUESTS[lanes]} per target, order rotated, medians of rounds"
    summary = (
        f"added p50: {_listing(added, SUBJECTS, '+.2f')} ms; p50: {_listing(p50, ('direct', *SUBJECTS), '.2f')} ms; "
        f"{per_round}; {_errors_text(errors)}" + (f"; {litellm_failure}" if litellm_failure else "")
    )
    gateway, bare = added["gateway"], added["bare"]
    base_ok = clean["direct"] and clean["gateway"]
    if "litellm" in added:
        litellm = added["litellm"]
        litellm_passed = base_ok and clean["litellm"] and gateway <= GOAL_LITELLM_SHARE * litellm
    else:  # reported as failed, with the reason in the note
        litellm, litellm_passed = 0.0, False
    return [
        Result(
            f"gateway: added p50, c={lanes} (vs bare passthrough)",
            "ms",
            gateway,
            bare,
            f"<= {GOAL_BARE_FACTOR:g}x bare",
            base_ok and clean["bare"] and gateway <= GOAL_BARE_FACTOR * bare,
            note=summary,
        ),
        Result(
            f"gateway: added p50, c={lanes} (vs LiteLLM)",
            "ms",
            gateway,
            litellm,
            "<= 1/3 LiteLLM",
            litellm_passed,
            note=f"{litellm_failure}; {summary}" if litellm_failure else summary,
        ),
        Result(
            f"gateway: added p99, c={lanes} (vs bare passthrough)",
            "ms",
            added99["gateway"],
            added99["bare"],
            "informational",
            all(clean.values()),
            note=f"added p99: {_listing(added99, SUBJECTS, '+.2f')} ms; "
            f"p99: {_listing(p99, ('direct', *SUBJECTS), '.2f')} ms; {per_round}",
        ),
    ]


def _percentiles(rounds: dict[str, list[list[float]]]) -> tuple[dict[str, float], dict[str, float]]:
    return (
        {name: median_of_rounds(samples) for name, samples in rounds.items()},
        {name: median_of_rounds(samples, 99) for name, samples in rounds.items()},
    )


def _line(prefix: str, p50: dict, p99: dict, extra: str) -> str:
    """The absolute p50/p99 of every target and each subject's added p50, for the log."""
    cells = ", ".join(
        f"{LABEL[name]} {p50[name]:.2f}/{p99[name]:.2f}"
        + (f" ({p50[name] - p50['direct']:+.2f})" if name != "direct" else "")
        for name in ("direct", *SUBJECTS)
        if name in p50
    )
    return f"  {prefix}: p50/p99 ms {cells}; {extra}"


def run() -> list[Result]:
    results: list[Result] = []
    with mock_openai() as mock_url, ExitStack() as litellm_stack, ThreadPoolExecutor(1) as starter:
        # LiteLLM imports for ~25 s: it starts while the bench database is created and migrated
        litellm_started = starter.submit(_litellm, litellm_stack, mock_url)
        try:
            results.extend(_run(mock_url, litellm_started))
        finally:
            litellm_started.result()  # entered into litellm_stack, so stopped on the way out
    return results


def _run(mock_url: str, litellm_started) -> list[Result]:
    started = time.perf_counter()
    results: list[Result] = []
    overhead_p50: dict[int, float] = {}
    gateway_p50: dict[int, float] = {}
    with bench_database("gateway") as database_env, bench_redis() as redis_url, ExitStack() as stack:
        key = _setup()
        # up before the web process starts: both importing at once on a loaded machine outlasts start_web's 30 s
        litellm_url, litellm_failure = litellm_started.result()
        env = {
            **SERVER_ENV,
            "DATABASE_URL": database_env["DATABASE_URL"],
            "REDIS_URL": redis_url,
            "OPENAI_BASE_URL": mock_url,
        }
        bare_url = stack.enter_context(passthrough_server(mock_url))
        _answer("bare passthrough", bare_url, "x")
        gateway_url = stack.enter_context(uvicorn_server(env)) + "/v1"
        _check_gateway(gateway_url, key)
        urls = {"direct": (mock_url, "x"), "bare": (bare_url, "x"), "gateway": (gateway_url, key)}
        if litellm_url:
            urls["litellm"] = (litellm_url, litellm_proxy.MASTER_KEY)
        for lanes in CONCURRENCY:
            t0 = time.perf_counter()
            rounds, errors, overheads = _measure(urls, lanes)
            p50, p99 = _percentiles(rounds)
            overhead_p50[lanes], gateway_p50[lanes] = percentile(overheads, 50), p50["gateway"]
            extra = f"gateway header p50 {overhead_p50[lanes]:.2f} ms; {_errors_text(errors)}"
            print(_line(f"c={lanes}", p50, p99, f"{extra} ({time.perf_counter() - t0:.1f} s)"), flush=True)
            results.extend(_rows(lanes, p50, p99, errors, litellm_failure))
        t0 = time.perf_counter()
        rounds, errors, _ = _measure(urls, 1, stream=True)
        p50, p99 = _percentiles(rounds)
        text = _errors_text(errors)
        print(_line("stream c=1, first token", p50, p99, f"{text} ({time.perf_counter() - t0:.1f} s)"), flush=True)
        added = _added(p50)
        results.append(
            Result(
                "gateway: added p50 first token, stream, c=1 (vs bare)",
                "ms",
                added["gateway"],
                added["bare"],
                "informational",
                not any(errors.values()),
                note=f"added p50 to the first chunk with content: {_listing(added, SUBJECTS, '+.2f')} ms; "
                f"p50: {_listing(p50, ('direct', *SUBJECTS), '.2f')} ms; {ROUNDS} rounds of {STREAM_REQUESTS}; {text}"
                + (f"; {litellm_failure}" if litellm_failure else ""),
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
