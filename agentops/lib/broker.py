"""What the Celery broker (Redis) holds: how many messages wait in each queue, and which runs still have an
execute_run message waiting in the queue."""

from __future__ import annotations

import base64
import json

import redis
import structlog
from django.conf import settings
from kombu.transport.redis import Channel

log = structlog.get_logger(__name__)

EXECUTE_RUN = "agentops.execute_run"


def queue_keys(queue: str) -> list[str]:
    """The Redis lists behind one Celery queue: kombu keeps one per priority step."""
    return [queue if step == 0 else f"{queue}{Channel.sep}{step}" for step in Channel.priority_steps]


def queues() -> list[str]:
    """The Celery queues agentops sends to (every task goes to the default queue today)."""
    return [settings.CELERY_TASK_DEFAULT_QUEUE]


def queue_depths(timeout: float = 1.0) -> dict[str, int] | None:
    """Messages waiting in each queue (LLEN of its lists, every priority step), read from the broker itself
    (``CELERY_BROKER_URL``, which may be another Redis than ``REDIS_URL``); None when it cannot be read."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        pipe = client.pipeline(transaction=False)
        names = queues()
        for queue in names:
            for key in queue_keys(queue):
                pipe.llen(key)
        lengths = iter(pipe.execute())
        return {queue: sum(next(lengths) for _ in queue_keys(queue)) for queue in names}
    except redis.RedisError:
        log.warning("broker.unreadable", exc_info=True)
        return None
    finally:
        client.close()


def runs_waiting_in_queue() -> set[int] | None:
    """Runs whose execute_run message is still in the queue (not yet taken by a worker); None when the broker
    cannot be read."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=5, socket_connect_timeout=2)
    try:
        pipe = client.pipeline(transaction=False)
        for key in queue_keys(settings.CELERY_TASK_DEFAULT_QUEUE):
            pipe.lrange(key, 0, -1)
        raw_messages = [raw for found in pipe.execute() for raw in found]
    except redis.RedisError:
        log.warning("broker.unreadable", exc_info=True)
        return None
    finally:
        client.close()
    return {run for run in map(_run_of, raw_messages) if run is not None}


def _run_of(raw: bytes) -> int | None:
    try:
        message = json.loads(raw)
        if message.get("headers", {}).get("task") != EXECUTE_RUN:
            return None
        return int(json.loads(base64.b64decode(message["body"]))[0][0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None
