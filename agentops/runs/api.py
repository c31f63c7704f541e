"""Runs over the REST API (DESIGN.md §5, §8): start one (idempotently), read it — optionally long-polling
until its status changes —, cancel it, list them. Every run an agent sees is its own; another agent's run
answers 404 like a missing one. State changes go through agentops.runs.actions.lifecycle."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import structlog
from django.conf import settings
from django.db import transaction
from ninja import Field, Header, Path, Query, Router, Schema

from agentops.api.errors import ApiError, not_found
from agentops.api.schemas import MAX_ID, JsonObject, Text, responses
from agentops.api.scopes import require
from agentops.lib.longpoll import wait_for_change
from agentops.runs.actions import lifecycle
from agentops.runs.models import Agent, Run
from agentops.runs.registry import load_agents

router = Router(tags=["runs"])

SCOPE = "runs"
RunStatus = Literal["queued", "running", "waiting_human", "succeeded", "failed", "cancelled"]


class RunIn(Schema):
    agent: Text | None = Field(
        None, max_length=80, description="A registered agent function; defaults to the key's agent (only it)"
    )
    input: JsonObject = Field(..., description="The agent function's input")
    session_id: Text = Field("", max_length=200)


class RunOut(Schema):
    id: int
    agent: str
    status: RunStatus
    session_id: str
    input: Any = None
    output: Any = None
    error: str
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    url: str = Field(..., description="The run's page in the browser")


class RunList(Schema):
    items: list[RunOut]
    count: int


def run_out(run: Run, agent_name: str) -> dict:
    return {
        "id": run.pk,
        "agent": agent_name,
        "status": run.status,
        "session_id": run.session_id,
        "input": run.input,
        "output": run.output,
        "error": run.error,
        "cancel_requested": run.cancel_requested,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "url": f"/runs/{run.pk}/",
    }


@router.post("", response=responses({201: RunOut, 200: RunOut}), summary="Start a run")
def create_run(
    request,
    body: RunIn,
    idempotency_key: str | None = Header(
        None,
        alias="Idempotency-Key",
        max_length=100,
        description="The same key (for this agent) returns the same run instead of starting another",
    ),
):
    """201 with a new queued run, or 200 with the existing run when the Idempotency-Key was used before."""
    principal = require(request, SCOPE)
    name = body.agent or principal.agent
    if name != principal.agent:
        raise ApiError(
            403,
            "forbidden",
            "a key can only start runs of its own agent",
            {"agent": name, "key_agent": principal.agent},
        )
    if name not in load_agents():
        raise ApiError(
            422, "invalid", f"{name!r} is not a registered agent function", {"agent": name, "field": "agent"}
        )
    agent = Agent.objects.get(pk=principal.agent_id)
    try:
        run, created = lifecycle.start_run(
            agent, body.input, session_id=body.session_id, idempotency_key=(idempotency_key or "").strip()
        )
    except lifecycle.AgentDisabled as exc:  # disabled in the seconds a process still trusts the key
        raise ApiError(403, "agent_disabled", str(exc), {"agent": agent.name}) from None
    structlog.contextvars.bind_contextvars(session_id=run.session_id, run_id=run.pk)  # on the request's log line
    return (201 if created else 200), run_out(run, agent.name)


@router.get("", response=responses({200: RunList}), summary="List this agent's runs")
def list_runs(
    request,
    status: RunStatus | None = None,
    limit: int = Query(20, ge=1, le=100),
    offset: int = Query(0, ge=0, le=2**31 - 1),
):
    """Newest first; ``count`` is the total matching, ``items`` one page of it."""
    principal = require(request, SCOPE)
    runs = Run.objects.filter(agent_id=principal.agent_id)
    if status:
        runs = runs.filter(status=status)
    count = runs.count()
    items = [run_out(run, principal.agent) for run in runs.order_by("-created_at", "-pk")[offset : offset + limit]]
    return {"items": items, "count": count}


@router.get("/{run_id}", response=responses({200: RunOut}), summary="Get a run (optionally long-poll)")
async def get_run(
    request,
    run_id: int = Path(..., ge=1, le=MAX_ID),
    wait: float = Query(
        0,
        ge=0,
        le=settings.API_MAX_WAIT_SECONDS,
        description="Seconds to wait for the status to change from what it is now (0 = answer at once)",
    ),
):
    """The run. With ``wait``, answers as soon as its status differs from the status at request time, or
    after ``wait`` seconds with the unchanged run."""
    principal = require(request, SCOPE)

    async def read() -> Run | None:
        return await Run.objects.filter(pk=run_id, agent_id=principal.agent_id).afirst()

    run = await read()
    if run is None:
        raise not_found("run")
    initial = run.status
    if wait > 0 and not run.is_terminal:
        run = await wait_for_change(f"run.{run_id}", read, lambda r: r is None or r.status != initial, wait)
        if run is None:
            raise not_found("run")
    return run_out(run, principal.agent)


@router.post("/{run_id}/cancel", response=responses({200: RunOut}, 409), summary="Cancel a run")
def cancel_run(request, run_id: int = Path(..., ge=1, le=MAX_ID)):
    """Cancelled at once when no worker holds it; a running one stops before its next step
    (``cancel_requested`` true until then). 409 when the run already finished."""
    principal = require(request, SCOPE)
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id, agent_id=principal.agent_id).first()
        if run is None:
            raise not_found("run")
        if run.is_terminal:
            raise ApiError(
                409, "conflict", f"the run already finished ({run.status})", {"run": run.pk, "status": run.status}
            )
        run = lifecycle.cancel_run(run.pk)
    return run_out(run, principal.agent)
