"""``/v1/responses`` through the gateway: the latency it adds to the same official ``openai`` SDK call, beside
chat completions (bench_gateway.py), with the same goals.

Subject: ``client.responses.create`` through the gateway (http://<web>/v1, an agent key with the ``gateway``
scope): key check, per-key rate limit and in-flight slot, the Responses body translated to a chat completion,
``guarded_llm`` (reservation against a global budget → the default upstream → settle), the answer translated
back to a response object and STORED (``store`` defaults to true, as on OpenAI: one PostgreSQL insert per
call, before the answer's last byte). Baseline: the SAME SDK call (``responses.create``) straight to the mock
(agentops/demo/mock_openai.py), which answers ``/v1/responses`` itself, in the same run. Model "mock-small"
(the default upstream answers), max_output_tokens=50, never cached.

Concurrency 1, 4 and 16 with one client per thread; ROUNDS interleaved rounds per concurrency, medians of
rounds; added = gateway − direct for p50 and p99. Streaming (c=1, ``responses.stream``): time to the first
``response.output_text.delta``. Goals as for chat completions: added p50 ≤ 2 ms and p99 ≤ 10 ms at c=1 and
c=4; c=16 and streaming are reported.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import openai

from tests.bench import bench_gateway as chat_bench
from tests.bench.bench_gateway import GOAL_P50_MS, GOAL_P99_MS, Added, _errors_text, bench_redis, mock_openai
from tests.bench.common import bench_database, uvicorn_server
from tests.bench.harness import Result, median_of_rounds, percentile

MODEL = chat_bench.MODEL
INPUT = "benchmark prompt"
MAX_OUTPUT_TOKENS = 50
STORE = os.environ.get("BENCH_RESPONSES_STORE", "1") != "0"  # 0: measure without the stored answer


class ResponsesTarget(chat_bench.Target):
    """bench_gateway's load, with ``responses.create`` / ``responses.stream`` as the call."""

    def call(self, client: openai.OpenAI, n: int) -> list[float]:
        samples, overheads = [], []
        for _ in range(n):
            started = time.perf_counter()
            try:
                raw = client.responses.with_raw_response.create(
                    model=MODEL, input=INPUT, max_output_tokens=MAX_OUTPUT_TOKENS, store=STORE
                )
                response = raw.parse()
                took = (time.perf_counter() - started) * 1000
            except Exception as exc:
                self._error(exc)
                continue
            if not response.output_text:
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
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            first = None
            try:
                with client.responses.stream(model=MODEL, input=INPUT, max_output_tokens=MAX_OUTPUT_TOKENS) as stream:
                    for event in stream:
                        if first is None and event.type == "response.output_text.delta" and event.delta:
                            first = (time.perf_counter() - started) * 1000
            except Exception as exc:
                self._error(exc)
                continue
            if first is None:
                self._error(RuntimeError("stream without text"))
                continue
            samples.append(first)
        return samples


def _check(gateway_url: str, key: str) -> None:
    client = openai.OpenAI(base_url=gateway_url, api_key=key, max_retries=0, timeout=30)
    try:
        raw = client.responses.with_raw_response.create(model=MODEL, input=INPUT, max_output_tokens=MAX_OUTPUT_TOKENS)
        response = raw.parse()
    except openai.APIStatusError as exc:
        raise RuntimeError(f"responses check: {exc.status_code} {exc.response.text[:300]}") from None
    finally:
        client.close()
    if raw.headers.get("x-agentops-handler") != "primary" or not response.output_text or not response.usage:
        raise RuntimeError(f"responses check: headers {dict(raw.headers)}, answer {response}")


def _measure(mock_url: str, gateway_url: str, key: str, lanes: int, stream: bool = False):
    """Chat completions and responses, each direct to the mock and through the gateway, in the same rounds
    (the order rotating per round); samples per round by target name, and the targets (errors, headers)."""
    targets = {
        "chat direct": chat_bench.Target("chat direct", mock_url, "x", lanes),
        "chat gateway": chat_bench.Target("chat gateway", gateway_url, key, lanes),
        "responses direct": ResponsesTarget("responses direct", mock_url, "x", lanes),
        "responses gateway": ResponsesTarget("responses gateway", gateway_url, key, lanes),
    }
    if stream:
        requests, warmup = chat_bench.STREAM_REQUESTS, chat_bench.STREAM_WARMUP
    else:
        requests, warmup = chat_bench.REQUESTS[lanes], chat_bench.WARMUP[lanes]
    rounds: dict[str, list[list[float]]] = {name: [] for name in targets}
    names = list(targets)
    try:
        with ThreadPoolExecutor(lanes) as pool:
            for target in targets.values():  # connections, caches, plans, the thread pools
                chat_bench.batch(pool, target, warmup, stream)
                target.overheads.clear()
                target.errors.clear()
            for index in range(chat_bench.ROUNDS):
                for name in names[index % 4 :] + names[: index % 4]:
                    rounds[name].append(chat_bench.batch(pool, targets[name], requests, stream))
    finally:
        for target in targets.values():
            target.close()
    for name, samples in rounds.items():
        if any(not batch for batch in samples):
            raise RuntimeError(f"{name} c={lanes}: a round had no answer at all; errors {dict(targets[name].errors)}")
    return rounds, targets


def _added(api: str, lanes: int, rounds: dict, targets: dict, goal: bool) -> list[Result]:
    direct, gateway = rounds[f"{api} direct"], rounds[f"{api} gateway"]
    errors = _errors_text(targets[f"{api} direct"].errors, targets[f"{api} gateway"].errors)
    clean = errors == "no errors"
    rows = []
    for q, limit in ((50, GOAL_P50_MS), (99, GOAL_P99_MS)):
        d, g = median_of_rounds(direct, q), median_of_rounds(gateway, q)
        rows.append(
            Added(
                f"{api}: added p{q} latency, c={lanes} (vs direct SDK)",
                "ms",
                g - d,
                d,
                f"added <= {limit:.1f}" if goal else "informational",
                (g - d <= limit and clean) if goal else clean,
                note=f"gateway p{q} {g:.2f} ms vs direct {d:.2f} ms; {chat_bench.ROUNDS} rounds; {errors}",
                gateway=g,
            )
        )
    overhead = percentile(targets[f"{api} gateway"].overheads, 50)
    print(
        f"  {api} c={lanes}: direct p50 {rows[0].baseline:.2f} p99 {rows[1].baseline:.2f} ms; gateway p50 "
        f"{rows[0].gateway:.2f} p99 {rows[1].gateway:.2f} ms; X-Agentops-Overhead-Ms p50 {overhead:.2f}; {errors}",
        flush=True,
    )
    return rows


def run() -> list[Result]:
    started = time.perf_counter()
    results: list[Result] = []
    with bench_database("responses") as database_env, bench_redis() as redis_url, mock_openai() as mock_url:
        key = chat_bench._setup()
        env = {
            **chat_bench.SERVER_ENV,
            "DATABASE_URL": database_env["DATABASE_URL"],
            "REDIS_URL": redis_url,
            "OPENAI_BASE_URL": mock_url,
        }
        with uvicorn_server(env) as url:
            gateway_url = url + "/v1"
            _check(gateway_url, key)
            for lanes in chat_bench.CONCURRENCY:
                rounds, targets = _measure(mock_url, gateway_url, key, lanes)
                goal = lanes in chat_bench.GOAL_CONCURRENCY
                results += _added("responses", lanes, rounds, targets, goal)
                results += _added("chat", lanes, rounds, targets, False)
            rounds, targets = _measure(mock_url, gateway_url, key, 1, stream=True)
            for api in ("responses", "chat"):
                direct, gateway = rounds[f"{api} direct"], rounds[f"{api} gateway"]
                d50, g50 = median_of_rounds(direct), median_of_rounds(gateway)
                errors = _errors_text(targets[f"{api} direct"].errors, targets[f"{api} gateway"].errors)
                print(f"  {api} stream c=1: first text direct p50 {d50:.2f} ms, gateway {g50:.2f} ms; {errors}")
                results.append(
                    Added(
                        f"{api}: added p50 time to first text, stream, c=1",
                        "ms",
                        g50 - d50,
                        d50,
                        "informational",
                        errors == "no errors",
                        note=f"gateway p50 {g50:.2f} ms vs direct {d50:.2f} ms; {errors}",
                        gateway=g50,
                    )
                )
            spent, held, ledger = chat_bench._budget_spend()
    print(
        f"  responses bench: {spent} tokens spent, {ledger} ledger rows, {held} reservations not settled; "
        f"took {time.perf_counter() - started:.1f} s (store={STORE})",
        flush=True,
    )
    return results
