"""Beat's repairs: runs whose worker stopped renewing its lease, and queued runs whose execute_run message
was lost. Both send the run again through lifecycle.send_execution (a duplicate message is harmless: the
claim lets one execution through)."""

from __future__ import annotations

from datetime import timedelta

import structlog
from django.db import transaction
from django.utils import timezone

from agentops.lib.broker import runs_waiting_in_queue
from agentops.runs.actions import lifecycle
from agentops.runs.models import Run

log = structlog.get_logger("agentops.runs.actions")


def reclaim_expired_runs() -> list[int]:
    """Beat: re-enqueue runs whose worker stopped renewing its lease (it died or hung)."""
    reclaimed = []
    for run_pk in Run.objects.filter(status=Run.Status.RUNNING, lease_expires_at__lt=timezone.now()).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            run = Run.objects.select_for_update(skip_locked=True).filter(pk=run_pk).first()
            if run is None or run.status != Run.Status.RUNNING or run.lease_expires_at >= timezone.now():
                continue
            log.warning("run.reclaimed", run_id=run.pk, dead_worker=run.lease_owner)
            run.status, run.lease_owner, run.lease_expires_at = Run.Status.QUEUED, "", None
            run.version += 1
            run.save(update_fields=["status", "lease_owner", "lease_expires_at", "version", "updated_at"])
            lifecycle.enqueue_execution(run.pk)
            lifecycle.announce_run(run)
            reclaimed.append(run.pk)
    return reclaimed


def requeue_stale_runs(older_than_seconds: float, limit: int = 500) -> list[int]:
    """Beat: enqueue again the runs that sat queued longer than `older_than_seconds` and have no execute_run
    message in the broker's queue (it was never sent, or a worker took it and died). A run still waiting
    behind a backlog is left alone; each one re-sent has its updated_at touched, so the next beat waits
    another interval before sending it again."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    candidates = list(
        Run.objects.filter(status=Run.Status.QUEUED, updated_at__lt=cutoff)
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    if not candidates:
        return []
    waiting = runs_waiting_in_queue()
    if waiting is None:  # the broker is away: nothing can be sent now; the next beat tries again
        return []
    with transaction.atomic():
        stale = list(
            Run.objects.select_for_update(skip_locked=True)
            .filter(pk__in=set(candidates) - waiting, status=Run.Status.QUEUED, updated_at__lt=cutoff)
            .values_list("pk", flat=True)
        )
        Run.objects.filter(pk__in=stale).update(updated_at=timezone.now())
    for run_pk in stale:
        log.warning("run.requeued", run_id=run_pk, queued_longer_than=older_than_seconds)
        lifecycle.send_execution(run_pk)
    return stale
