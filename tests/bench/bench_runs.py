"""Durable runs vs bare Celery: 4-step simulated runs per second on ONE worker process (concurrency 1),
against chains of 4 no-op Celery tasks on the same worker, interleaved in rounds.

The run pays for what durability costs: the lease claim, a committed journal row per step (begin and
finish), the guard pipeline for the two llm steps (simulated provider, latency 0), the tool thread pool,
heartbeat thread, live events and the final commit. The chain pays for 4 broker round trips.

This module is also the worker's agent module (AGENTOPS_AGENT_MODULES=tests.bench.bench_runs, and
`-I tests.bench.bench_runs` so `bench.noop` is registered before the first chain arrives). The worker
listens on a private queue, so no other worker on the same Redis takes these tasks (nor it theirs).
Worker logs are at WARNING for both sides (no per-task or per-call INFO lines).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from agentops.celery import app
from agentops.runtime.context import agent, tool
from tests.bench.common import bench_database, bench_worker
from tests.bench.harness import Result, interleaved

ROOT = Path(__file__).resolve().parents[2]
AGENT = "bench-4step"
OPERATION = "bench"
PROVIDER = "bench-simulated"
QUEUE = f"bench-runs-{os.getpid()}"  # the bench process's own queue (the worker gets it on its command line)
ROUNDS, RUNS_PER_ROUND, WARMUP = 6, 60, 20


@app.task(name="bench.noop")
def noop(*args, **kwargs) -> None:
    return None


@tool("bench_lookup")
def bench_lookup(args, idempotency_key=None):
    return {"n": args.get("n", 0)}


@agent(AGENT, description="Benchmark: 4 ctx steps (llm, tool, tool, llm) on a zero-latency simulated model.")
def four_steps(ctx, data):
    plan = ctx.llm(OPERATION, [{"role": "user", "content": f"plan item {data.get('n', 0)}"}])
    first = ctx.tool("bench_lookup", {"n": 1})
    second = ctx.tool("bench_lookup", {"n": 2})
    answer = ctx.llm(OPERATION, [{"role": "user", "content": f"answer item {data.get('n', 0)}"}])
    return {"plan": plan[:24], "answer": answer[:24], "n": first["n"] + second["n"]}


# --- the benchmark (runs in the bench process) --------------------------------------------------


def _configure():
    """A zero-latency simulated provider and a route for the bench operation; the bench agent's row."""
    from agentops.config import actions as config_actions
    from agentops.config.models import ModelRoute, Provider
    from agentops.runs.actions import agents as agent_actions

    provider = Provider.objects.filter(name=PROVIDER).first() or Provider(name=PROVIDER)
    provider.kind, provider.latency_ms, provider.fault_rate, provider.enabled = Provider.Kind.SIMULATED, 0, 0.0, True
    config_actions.save_runtime_object(provider)
    route = ModelRoute.objects.filter(operation=OPERATION).first() or ModelRoute(operation=OPERATION)
    route.primary_provider, route.primary_model = provider, "gpt-4o-mini"
    route.backup_provider, route.backup_model = None, ""
    config_actions.save_runtime_object(route)
    return agent_actions.ensure_agent(AGENT, description="Benchmark: 4 ctx steps on a zero-latency simulated model")


def _runs_round(bench_agent, count: int) -> float:
    """Start `count` runs, wait until all succeeded; runs per second."""
    from django.db.models import Count

    from agentops.runs.actions import lifecycle
    from agentops.runs.models import Run

    started = time.perf_counter()
    pks = [lifecycle.start_run(bench_agent, {"n": n})[0].pk for n in range(count)]
    deadline = time.monotonic() + 120
    while True:
        counts = dict(Run.objects.filter(pk__in=pks).values_list("status").order_by().annotate(n=Count("pk")))
        if counts.get("succeeded", 0) == count:
            return count / (time.perf_counter() - started)
        if counts.get("failed") or time.monotonic() > deadline:
            failed = Run.objects.filter(pk__in=pks, status="failed").values_list("error_class", "error").first()
            raise RuntimeError(f"bench runs did not all succeed: {counts}; first failure: {failed}")
        time.sleep(0.02)  # coarse enough to leave the CPU to the worker (2 cores), fine for 2–10 s rounds


def _chains_round(count: int) -> float:
    """Send `count` chains of 4 no-op tasks, wait for every chain's last result; chains per second."""
    from celery import chain
    from celery.result import ResultSet

    started = time.perf_counter()
    results = [chain(*(noop.si().set(queue=QUEUE) for _ in range(4))).apply_async() for _ in range(count)]
    ResultSet(results).join(timeout=120, propagate=True)
    return count / (time.perf_counter() - started)


def run() -> list[Result]:
    # A database of its own, fresh every time: the seeded daily budget (100,000 tokens, escalate) is not spent
    # by earlier benchmark runs of the same day (runs would wait for a human instead of finishing).
    with bench_database("runs") as env:
        bench_agent = _configure()
        previous_routes = app.conf.task_routes
        app.conf.update(task_routes={"agentops.execute_run": {"queue": QUEUE}})  # our runs go to our worker
        try:
            with bench_worker(
                "runs",
                QUEUE,
                {**env, "AGENTOPS_AGENT_MODULES": "tests.bench.bench_runs"},
                "-I",
                "tests.bench.bench_runs",
            ):
                _runs_round(bench_agent, WARMUP)
                _chains_round(WARMUP)
                subject, baseline = interleaved(
                    ROUNDS,
                    lambda: [_runs_round(bench_agent, RUNS_PER_ROUND)],
                    lambda: [_chains_round(RUNS_PER_ROUND)],
                )
        finally:
            app.conf.update(task_routes=previous_routes)
    runs_per_s = statistics.median(r[0] for r in subject)
    chains_per_s = statistics.median(r[0] for r in baseline)
    return [
        Result(
            "runs: 4-step simulated runs/s, 1 worker proc (vs chain of 4 no-op tasks)",
            "runs/s",
            runs_per_s,
            chains_per_s,
            "ratio >= 0.50",
            runs_per_s / chains_per_s >= 0.50,
            note=f"{ROUNDS} interleaved rounds of {RUNS_PER_ROUND}; medians; worst round "
            f"{min(r[0] for r in subject):.1f} vs {min(r[0] for r in baseline):.1f}",
        )
    ]
