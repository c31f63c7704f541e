"""Thin Celery tasks: primary keys in, an action call, nothing else. Actions enqueue them by name
(agentops.lib.queue); the project's Celery app finds them through autodiscovery."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from agentops.runs import execution
from agentops.runs.actions import recovery


# The soft limit backstops runaway agent code that makes no ctx call (ctx itself enforces the 300 s
# request timeout between steps); a suspended run frees the worker, so human waits never count.
# A claim that failed because PostgreSQL was away is tried again a few seconds later; should that message be
# lost too, beat enqueues the still-queued run again (RUN_REQUEUE_SECONDS).
@shared_task(bind=True, name="agentops.execute_run", acks_late=True, reject_on_worker_lost=True, soft_time_limit=360)
def execute_run(self, run_pk: int) -> str:
    """Claim and execute one run (a duplicate delivery finds it claimed and exits quietly)."""
    try:
        return execution.execute_run(run_pk)
    except execution.ClaimUnavailable as exc:
        raise self.retry(exc=exc, countdown=2, max_retries=30) from None


@shared_task(name="agentops.reclaim_runs")
def reclaim_runs() -> dict[str, list[int]]:
    """Beat: re-enqueue runs whose worker died (lease expired) and queued runs whose message was lost."""
    return {
        "reclaimed": recovery.reclaim_expired_runs(),
        "requeued": recovery.requeue_stale_runs(settings.RUN_REQUEUE_SECONDS),
    }
