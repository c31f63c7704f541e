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
    from agentops.guarding import probe_route as probe

    return probe(operation, prompt)
