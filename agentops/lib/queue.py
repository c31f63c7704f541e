"""Work is enqueued by task name after the transaction commits (Zulip's ``queue_event_on_commit``, pretix's
``TransactionAwareTask``): an action never imports the task it starts, and a worker never sees a row that a
rolled-back transaction would have written."""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.db import transaction


def send_now(task: str, *args: Any, **options: Any):
    """Send task ``task`` (its registered name) with primary keys as arguments; answers the AsyncResult.

    Nobody waits for these tasks' results (their effects are rows), so none is kept unless the caller asks
    with ``ignore_result=False``: with the Redis result backend, each kept result costs the sender a
    SUBSCRIBE to its result channel (~6 % of an escalating API request) and the worker a SET and PUBLISH."""
    options.setdefault("ignore_result", True)
    if options["ignore_result"]:
        # Celery's AsyncResult reaches for ``app.backend``, which Celery builds once per THREAD (entry points
        # scanned, a Redis client made): under ASGI every request's sync code runs on a new thread, so each
        # send paid that (~40 % of its cost). A sent task whose result nobody keeps needs only its id.
        options.setdefault("result_cls", SentTask)
        options.setdefault("add_to_parent", False)  # a worker task's children are stored with its result
    return current_app.send_task(task, args=args, **options)


class SentTask:
    """What ``send_now`` answers for a task whose result is not kept: its id."""

    __slots__ = ("id", "ignored")

    def __init__(self, task_id: str) -> None:
        self.id = task_id


def enqueue_on_commit(task: str, *args: Any, robust: bool = False, **options: Any) -> None:
    """Send task ``task`` once the current transaction commits (at once outside a transaction). ``robust``: a
    broker that refuses the send is logged, not raised into the caller whose work has already committed
    (for work that beat re-sends anyway)."""
    transaction.on_commit(lambda: send_now(task, *args, **options), robust=robust)
