"""The Celery app. Workers and beat start with `celery -A agentops.celery ...`."""

from __future__ import annotations

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentops.settings")

app = Celery("agentops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["agentops", "review", "budgets"])


@signals.setup_logging.connect
def _keep_our_logging(**kwargs):
    """Connecting this stops Celery from replacing the structlog JSON configuration."""
    from django.conf import settings  # noqa: F401  (importing settings configures logging)


@signals.task_prerun.connect
def _bind_task_context(task_id=None, task=None, **kwargs):
    import structlog

    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=task.name if task else None)


@signals.task_postrun.connect
def _count_task(task=None, state=None, **kwargs):
    from agentops.observability import metrics
    from agentops.observability.process import update_memory_gauge

    metrics.CELERY_TASKS.labels(task=task.name if task else "?", outcome=(state or "unknown").lower()).inc()
    update_memory_gauge()


@signals.worker_process_shutdown.connect
def _forget_dead_process(pid=None, **kwargs):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid or os.getpid())


def _survive_broker_loss() -> None:
    """Keep a worker alive when Redis goes away (celery/kombu 5.7).

    After a lost broker connection the consumer collects the connection (dropping its transport client) and
    then closes it; closing the Redis channel restores its unacknowledged messages through that dropped
    client and raises AttributeError, which escapes celery's ignore_errors and stops the whole worker (seen in
    tests/chaos/test_restarts.py). A broker that is away cannot take the messages back anyway: they stay in
    kombu's unacked set, are restored after the visibility timeout, and beat enqueues stale queued runs
    again sooner (RUN_REQUEUE_SECONDS). So that restore gives up quietly and the worker reconnects."""
    from kombu.transport import redis as kombu_redis

    restore_unacked = kombu_redis.QoS.restore_unacked
    if getattr(restore_unacked, "survives_broker_loss", False):
        return

    def restore_unacked_or_leave_them(self, client=None):
        try:
            return restore_unacked(self, client)
        except AttributeError:
            import structlog

            structlog.get_logger("agentops.celery").warning(
                "celery.unacked_left_for_visibility_timeout", messages=len(self._delivered)
            )

    restore_unacked_or_leave_them.survives_broker_loss = True  # type: ignore[attr-defined]
    kombu_redis.QoS.restore_unacked = restore_unacked_or_leave_them


_survive_broker_loss()
