"""The Celery app. Workers and beat start with `celery -A agentops.celery ...`."""

from __future__ import annotations

import os

import redis
import structlog
from celery import Celery, signals
from kombu.transport import redis as kombu_redis

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentops.settings")

app = Celery("agentops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["agentops.runs", "agentops.ops", "agentops.gateway", "review", "budgets"])


@signals.setup_logging.connect
def _keep_our_logging(**kwargs):
    """Connecting this stops Celery from replacing the structlog JSON configuration (settings.py configures
    logging when Django loads it)."""


@signals.task_prerun.connect
def _bind_task_context(task_id=None, task=None, **kwargs):
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=task.name if task else None)


@signals.task_prerun.connect
@signals.task_postrun.connect
def _replace_unusable_connections(**kwargs):
    """What Django does around each request: drop a connection past CONN_MAX_AGE, or broken (PostgreSQL
    restarted), and health-check the next one before use. Celery no longer closes every connection around
    every task (settings.CELERY_DB_REUSE_MAX says why)."""
    from django.db import close_old_connections  # noqa: PLC0415  (after settings, as in _count_task)

    close_old_connections()


@signals.task_postrun.connect
def _count_task(task=None, state=None, **kwargs):
    # Imported here, not at the top: a worker imports this module before Django's settings, and settings.py
    # sets PROMETHEUS_MULTIPROC_DIR, which must be in the environment before prometheus_client is imported.
    from agentops.observability import metrics  # noqa: PLC0415
    from agentops.observability.process import update_memory_gauge  # noqa: PLC0415

    metrics.CELERY_TASKS.labels(task=task.name if task else "?", outcome=(state or "unknown").lower()).inc()
    update_memory_gauge()


@signals.worker_process_init.connect
def _warm_tokenizers(**kwargs):
    # agentops.runtime imports the metrics: after settings, as in _count_task
    from agentops.runtime import tokens  # noqa: PLC0415

    tokens.warm(background=True)  # a run's first reservation need not wait for the tokenizer to load


@signals.worker_process_shutdown.connect
def _forget_dead_process(pid=None, **kwargs):
    from prometheus_client import multiprocess  # noqa: PLC0415  (after settings, as in _count_task)

    multiprocess.mark_process_dead(pid or os.getpid())


def _survive_broker_loss() -> None:
    """Keep a worker alive when Redis goes away (celery/kombu 5.7).

    After a lost broker connection the consumer collects and closes the connection, which leaves its Redis
    channels without a connection (or without its client). Two things then still reach for it: closing the
    channel restores its unacknowledged messages, and a task that finishes acknowledges its message. Both
    fail with AttributeError, which none of kombu's or celery's handlers expect (they catch the transport's
    connection errors), and the whole worker stops ("Unrecoverable error", seen in
    tests/chaos/test_restarts.py). Raising the connection error that it is lets those handlers do their job:
    the message stays in kombu's unacked set (restored after the visibility timeout; a finished run's
    redelivery finds it terminal, and beat enqueues a stale queued run again sooner), and the consumer
    reconnects."""
    connparams = kombu_redis.Channel._connparams
    if getattr(connparams, "survives_broker_loss", False):
        return

    def connparams_or_connection_error(self, asynchronous=False):
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection of this channel was closed")
        return connparams(self, asynchronous=asynchronous)

    connparams_or_connection_error.survives_broker_loss = True  # type: ignore[attr-defined]
    kombu_redis.Channel._connparams = connparams_or_connection_error


_survive_broker_loss()
