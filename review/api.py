"""Permission requests over the REST API (DESIGN.md §6, §8): an agent running outside agentops asks before
a risky action; the admin-editable escalation policy answers at once (approved) or sends the request to the
reviewers' queue (pending, with an escalation shown live in /review/). The agent then reads — optionally
long-polling — the decision the reviewer made on the same screens as for runs: approved, modified (with the
new arguments), taken_over (with the reviewer's result), rejected, or expired (the safe default, reject).

An agent that stops waiting says so (POST /actions/{id}/abandon, which the Python client sends when its
wait ends): a request still pending is closed at once (expired, the safe default), so no reviewer decides
what the agent will no longer act on.

POST answers approved or pending — or rejected at once when an auto-reject policy row covers the operation
(``reason`` ``auto_rejected``; an auto-approve row answers approved with ``reason`` ``auto_approved``; the
``rule`` and the ``comment`` name the row). Every request is recorded (review.models.ActionRequest).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import structlog
from django.conf import settings
from ninja import Field, Path, Query, Router, Schema
from pydantic import ConfigDict

from agentops.api.errors import not_found
from agentops.api.schemas import MAX_ID, JsonObject, Text, responses
from agentops.api.scopes import require
from agentops.lib.longpoll import wait_for_change
from agentops.runs.models import Agent
from review import actions
from review.models import ActionRequest

router = Router(tags=["actions"])

SCOPE = "actions"
MAX_INT = 2**31 - 1  # PositiveIntegerField
ActionStatus = Literal["pending", "approved", "modified", "taken_over", "rejected", "expired"]


class ActionContext(Schema):
    """What the reviewer sees beside the request; more keys are kept as they are."""

    model_config = ConfigDict(extra="allow")

    user_input: Text | None = Field(None, max_length=20_000)
    agent_analysis: Text | None = Field(None, max_length=20_000)
    suggestions: list[Text] | None = None


class ActionIn(Schema):
    session_id: Text = Field("", max_length=200)
    operation: Text = Field(..., min_length=1, max_length=100, description="The tool or operation to perform")
    arguments: JsonObject = Field(default_factory=dict)
    confidence: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    value: float | None = Field(None, allow_inf_nan=False, description="What is at stake (e.g. an amount)")
    retry_count: int = Field(0, ge=0, le=MAX_INT)
    context: ActionContext = Field(default_factory=ActionContext)


class DecisionOut(Schema):
    decision: ActionStatus
    arguments: dict[str, Any] | None = Field(None, description="Act with these (approved or modified)")
    result: Any = Field(None, description="The reviewer's result (taken_over)")
    comment: str
    reviewer: str | None
    reviewer_confidence: int | None
    decided_at: datetime | None


class ActionOut(Schema):
    id: int
    status: ActionStatus
    operation: str
    session_id: str
    requested_arguments: dict[str, Any]
    reason: str | None = Field(
        None,
        description="The escalation rule's reason when one fired; auto_approved / auto_rejected: a policy row decided",
    )
    priority: str | None
    rule: str | None
    escalation_id: int | None
    review_url: str | None = Field(None, description="The approval screen (pending requests)")
    arguments: dict[str, Any] | None = Field(None, description="Act with these (approved or modified)")
    result: Any = Field(None, description="The reviewer's result (taken_over)")
    comment: str
    reviewer: str | None
    reviewer_confidence: int | None
    decided_at: datetime | None
    created_at: datetime
    decision: DecisionOut | None = Field(None, description="Null while pending")


def status_of(action: ActionRequest) -> str:
    """``pending`` while a reviewer has yet to decide, else the decision."""
    decision = action.decision_made()
    return "pending" if decision is None else decision["decision"]


def action_out(action: ActionRequest) -> dict:
    """The ``ActionOut`` answer for ``action`` (fetched ``with_decision()``)."""
    decision = action.decision_made()
    if decision is not None:
        decision = {
            "arguments": None,
            "result": None,
            "reviewer": None,
            "reviewer_confidence": None,
            **decision,
        }
    return {
        "id": action.pk,
        "status": "pending" if decision is None else decision["decision"],
        "operation": action.operation,
        "session_id": action.session_id,
        "requested_arguments": action.arguments,
        "reason": action.reason or None,
        "priority": action.priority or None,
        "rule": action.rule or None,
        "escalation_id": action.escalation_id,
        "review_url": f"/review/{action.escalation_id}/" if action.escalation_id else None,
        "arguments": decision["arguments"] if decision else None,
        "result": decision["result"] if decision else None,
        "comment": decision["comment"] if decision else "",
        "reviewer": decision["reviewer"] if decision else None,
        "reviewer_confidence": decision["reviewer_confidence"] if decision else None,
        "decided_at": decision["decided_at"] if decision else None,
        "created_at": action.created_at,
        "decision": decision,
    }


@router.post("", response=responses({201: ActionOut}), summary="Ask permission for an action")
def request_action(request, body: ActionIn):
    """Evaluated by the escalation policy: ``approved`` at once when no rule fires (or a policy row
    auto-approves it), ``rejected`` at once when a row auto-rejects it, else ``pending`` with an escalation
    for the reviewers (``review_url``); read the decision with GET /actions/{id}?wait=."""
    principal = require(request, SCOPE)
    agent = Agent(pk=principal.agent_id, name=principal.agent)  # the verified key already named it: no read
    structlog.contextvars.bind_contextvars(session_id=body.session_id or None)  # on the request's log line
    action = actions.request_action(
        agent,
        operation=body.operation,
        session_id=body.session_id,
        arguments=body.arguments,
        value=body.value,
        confidence=body.confidence,
        retry_count=body.retry_count,
        context=body.context.model_dump(exclude_none=True),
    )
    return 201, action_out(action)  # the new row and its escalation are in memory: no re-read


@router.get("/{action_id}", response=responses({200: ActionOut}), summary="Get a decision (optionally long-poll)")
async def get_action(
    request,
    action_id: int = Path(..., ge=1, le=MAX_ID),
    wait: float = Query(
        0,
        ge=0,
        le=settings.API_MAX_WAIT_SECONDS,
        description="Seconds to wait for a decision while pending (0 = answer at once)",
    ),
):
    """The request and, once made, its decision. With ``wait``, answers as soon as the status differs from
    the status at request time (a reviewer decided, or it expired), or after ``wait`` seconds unchanged."""
    principal = require(request, SCOPE)

    async def read() -> ActionRequest | None:
        return await ActionRequest.objects.with_decision().filter(pk=action_id, agent_id=principal.agent_id).afirst()

    action = await read()
    if action is None:
        raise not_found("action")
    initial = status_of(action)
    if wait > 0 and initial == "pending" and action.escalation_id:
        escalation_id = action.escalation_id
        action = await wait_for_change(
            "review.queue",
            read,
            lambda a: a is None or status_of(a) != initial,
            wait,
            relevant=lambda data: data.get("escalation") == escalation_id,
        )
        if action is None:
            raise not_found("action")
    return action_out(action)


@router.post(
    "/{action_id}/abandon", response=responses({200: ActionOut}), summary="Stop waiting for a decision (closes it)"
)
def abandon_action(
    request,
    action_id: int = Path(..., ge=1, le=MAX_ID),
    waited: float = Query(0, ge=0, le=10**7, description="How long the agent waited, in seconds (for the audit)"),
):
    """The agent gives up waiting: a request still pending is closed at once (``expired``, the safe default
    reject; the audit log says the waiter gave up on the api channel) and a reviewer can no longer decide
    it. A request already decided is answered as it is (the decision won the race). Idempotent."""
    principal = require(request, SCOPE)
    action = ActionRequest.objects.with_decision().filter(pk=action_id, agent_id=principal.agent_id).first()
    if action is None:
        raise not_found("action")
    if action.escalation_id is not None and status_of(action) == "pending":
        actions.close_unwaited(action.escalation_id, channel="api", waited=waited, why="the client stopped waiting")
        action = ActionRequest.objects.with_decision().get(pk=action_id)
    return action_out(action)
