"""Thin Celery tasks: primary keys in, an action call, nothing else."""

from __future__ import annotations

import os
import socket

from agentops.celery import app


@app.task(name="agentops.ping")
def ping(token: str) -> dict:
    """Round-trip probe used by the ops page and the tests: proves a worker process took the task."""
    return {"token": token, "hostname": socket.gethostname(), "pid": os.getpid()}


@app.task(name="agentops.probe_route", soft_time_limit=330)
def probe_route(operation: str, prompt: str) -> dict:
    """One prompt through the guard pipeline on a worker; the result comes back through Celery."""
    from agentops.wiring import probe_route as probe

    return probe(operation, prompt)


# The soft limit backstops runaway agent code that makes no ctx call (ctx itself enforces the 300 s
# request timeout between steps); a suspended run frees the worker, so human waits never count.
# A claim that failed because PostgreSQL was away is tried again a few seconds later; should that message be
# lost too, beat enqueues the still-queued run again (RUN_REQUEUE_SECONDS).
@app.task(bind=True, name="agentops.execute_run", acks_late=True, reject_on_worker_lost=True, soft_time_limit=360)
def execute_run(self, run_pk: int) -> str:
    """Claim and execute one run (a duplicate delivery finds it claimed and exits quietly)."""
    from agentops.runs.execution import ClaimUnavailable
    from agentops.runs.execution import execute_run as execute

    try:
        return execute(run_pk)
    except ClaimUnavailable as exc:
        raise self.retry(exc=exc, countdown=2, max_retries=30) from None


@app.task(name="agentops.reclaim_runs")
def reclaim_runs() -> dict[str, list[int]]:
    """Beat: re-enqueue runs whose worker died (lease expired) and queued runs whose message was lost."""
    from django.conf import settings

    from agentops.runs.actions import reclaim_expired_runs, requeue_stale_runs

    return {"reclaimed": reclaim_expired_runs(), "requeued": requeue_stale_runs(settings.RUN_REQUEUE_SECONDS)}
