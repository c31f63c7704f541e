"""Work is enqueued by task name after the transaction commits (Zulip's ``queue_event_on_commit``, pretix's
``TransactionAwareTask``): an action never imports the task it starts, and a worker never sees a row that a
rolled-back transaction would have written."""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.db import transaction


def send_now(task: str, *args: Any, **options: Any):
    """Send task ``task`` (its registered name) with primary keys as arguments; answers the AsyncResult."""
    return current_app.send_task(task, args=args, **options)


def enqueue_on_commit(task: str, *args: Any, robust: bool = False, **options: Any) -> None:
    """Send task ``task`` once the current transaction commits (at once outside a transaction). ``robust``: a
    broker that refuses the send is logged, not raised into the caller whose work has already committed
    (for work that beat re-sends anyway)."""
    transaction.on_commit(lambda: send_now(task, *args, **options), robust=robust)
