"""Operator probes run on a worker: a round trip, and one prompt through the whole guard pipeline."""

from __future__ import annotations

import os
import socket

from celery import shared_task

from agentops import wiring
from agentops.runtime.protocols import BudgetExceeded, BudgetUnavailable


@shared_task(name="agentops.ping")
def ping(token: str) -> dict:
    """Round-trip probe used by the ops page and the tests: proves a worker process took the task."""
    return {"token": token, "hostname": socket.gethostname(), "pid": os.getpid()}


@shared_task(name="agentops.probe_route", soft_time_limit=330)
def probe_route(operation: str, prompt: str) -> dict:
    """One prompt through the guard pipeline on a worker; the result comes back through Celery. A refusal of
    the budget is an answer of the pipeline, not a failed task: it comes back naming the budget."""
    try:
        return wiring.probe_route(operation, prompt)
    except BudgetExceeded as exc:
        return {
            "ok": False,
            "refused": "budget",
            "budget": exc.budget,
            "error": exc.message,
            "cheaper_model": exc.cheaper_model,
        }
    except BudgetUnavailable as exc:
        return {"ok": False, "refused": "budget_unavailable", "error": str(exc) or "the budget store is unreachable"}
