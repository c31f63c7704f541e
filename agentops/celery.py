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
