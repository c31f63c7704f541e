"""Thin Celery tasks: primary keys in, an action call, nothing else."""

from __future__ import annotations

import os
import socket

from agentops.celery import app


@app.task(name="agentops.ping")
def ping(token: str) -> dict:
    """Round-trip probe used by the ops page and the tests: proves a worker process took the task."""
    return {"token": token, "hostname": socket.gethostname(), "pid": os.getpid()}
