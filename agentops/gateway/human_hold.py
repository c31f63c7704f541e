"""The human in the gateway, like in runs (the agent's ``gateway_human`` setting).

A gateway call that a budget set to escalate refuses (reason ``budget_exceeded``), or whose every upstream
failed (``all_fallbacks_failed``), raises an escalation in /review/ (source ``gateway``, kind ``llm``) that
shows the request: model, messages, why. With ``hold`` the answer waits for the reviewer — on the event
loop, no thread held, like a held tool call (tool_review.py) — and is then:

* approved (a budget block only): the call goes ahead once, past the block — no reservation; its ledger
  row is written as for any call and counts against the budgets (handling.held_job);
* taken over: the reviewer's text is the assistant message, streamed if the request asked for a stream,
  with zero usage; the ledger row (model and provider ``human``, no tokens) says so;
* rejected, or undecided when the hold ends (GATEWAY_HOLD_SECONDS) or the client leaves: the error the
  client would have got (429 ``insufficient_quota``, 503 …), saying why. An undecided item is closed at
  that moment (``review.actions.close_unwaited``: expired, the safe default), so nobody decides what
  nobody will act on; beat closes it if the web process holding it stopped.

With ``fail`` (the default) the error is answered at once, as before.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import structlog
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils.translation import gettext as _

from agentops.gateway import wire
from agentops.gateway.wire import ChatRequest, WireError
from agentops.lib.longpoll import wait_for_change
from agentops.runs.models import Agent
from agentops.runtime.errors import from_hops
from agentops.runtime.providers.base import content_text
from review import actions
from review.models import Escalation, Reason

log = structlog.get_logger("agentops.gateway")

HOLD = Agent.GatewayHuman.HOLD
BUDGET_EXCEEDED = Reason.BUDGET_EXCEEDED.value
ALL_FALLBACKS_FAILED = Reason.ALL_FALLBACKS_FAILED.value
CHANNEL = "gateway"
MESSAGES_SHOWN = 20  # the last messages of the request shown to the reviewer, each cut to TEXT_SHOWN
TEXT_SHOWN = 2_000


def mode(agent_id: int) -> str:
    """The agent's ``gateway_human`` (``fail`` for an agent that is gone)."""
    found = Agent.objects.filter(pk=agent_id).values_list("gateway_human", flat=True).first()
    return found or Agent.GatewayHuman.FAIL


def holds_for(error: WireError) -> bool:
    """Whether a failed chain is a reviewer's to answer: every upstream failed (unavailable, breaker open,
    timed out, rate limited, refused our credentials). An upstream's 4xx on the request itself is the
    client's to fix and is passed through as it is."""
    return error.status >= 500 or error.code == "rate_limit_exceeded"


@dataclass
class Held:
    """A call waiting for its reviewer: what answers it once they decided (handling.held_job)."""

    escalation_id: int
    reason: str
    refusal: WireError  # what the client gets on a rejection or when nobody decided
    principal: Any
    request: ChatRequest
    headers: dict[str, str]
    request_id: str
    operation: str
    session: str
    job: Any = None  # ``job(held, decided, outbox)`` answering once decided (None: handling.held_job)

    def review_headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-agentops-escalations", str(self.escalation_id).encode()),
            (b"x-agentops-review-url", f"/review/{self.escalation_id}/".encode()),
        ]


def hold(
    principal,
    request: ChatRequest,
    headers: dict[str, str],
    *,
    reason: str,
    why: str,
    refusal: WireError,
    operation: str,
    session: str,
    request_id: str,
    hops: list[dict[str, Any]] | None = None,
) -> Held:
    """Raise the escalation for a call whose answer now waits (on a gateway thread: it writes)."""
    messages = [
        {"role": str(m.get("role") or "?"), "content": content_text(m.get("content"))[:TEXT_SHOWN]}
        for m in request.messages[-MESSAGES_SHOWN:]
    ]
    prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    context: dict[str, Any] = {
        "user_input": prompt,
        "agent_analysis": why,
        "messages": messages,
        "messages_total": len(request.messages),
        "endpoint": request.endpoint,
        "request_id": request_id,
    }
    if hops:
        context["hops"] = hops
        failure = from_hops(hops)  # why, on the error taxonomy (the approval screen says it in words)
        if failure is not None:
            context["error"] = failure.to_dict()
    escalation = actions.hold_gateway_call(
        Agent(pk=principal.agent_id, name=principal.agent),
        reason=reason,
        operation=operation,
        hold_seconds=settings.GATEWAY_HOLD_SECONDS,
        session_id=session,
        arguments={
            "model": request.model,
            "max_tokens": request.max_tokens,
            "stream": request.stream,
            "tools": request.has_tools,
        },
        context=context,
    )
    log.info("gateway.held", escalation=escalation.pk, reason=reason, agent=principal.agent, request_id=request_id)
    return Held(escalation.pk, reason, refusal, principal, request, headers, request_id, operation, session)


async def decision(held: Held, gone: threading.Event) -> dict[str, Any]:
    """Wait (at most GATEWAY_HOLD_SECONDS, or until ``gone`` is set: the client left) for the reviewer's
    decision: ``{"decision": approved | taken_over | rejected | expired, "result", "comment", "reviewer"}``.
    An item still open at the end is closed at once (expired, the safe default); a decision that won the
    race counts as made."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    timeout = settings.GATEWAY_HOLD_SECONDS

    async def read() -> Escalation | None:
        return await Escalation.objects.select_related("decided_by").filter(pk=held.escalation_id).afirst()

    escalation = await wait_for_change(
        "review.queue",
        read,
        lambda e: e is None or not e.is_open or gone.is_set(),  # re-checked at least every 2 s
        timeout,
        relevant=lambda data: data.get("escalation") == held.escalation_id,
    )
    if escalation is not None and escalation.is_open:
        why = "the client disconnected" if gone.is_set() else f"the hold ended after {timeout:g} s"
        waited = round(loop.time() - began, 1)
        await sync_to_async(actions.close_unwaited)(held.escalation_id, channel=CHANNEL, waited=waited, why=why)
        escalation = await read()
    if escalation is None or escalation.state != Escalation.State.DECIDED:
        return {"decision": "expired", "comment": escalation.comment if escalation else "", "result": None}
    return {
        "decision": escalation.decision,
        "result": escalation.result,
        "comment": escalation.comment,
        "reviewer": escalation.decided_by.get_username() if escalation.decided_by_id else None,
    }


def refused(held: Held, decided: dict[str, Any]) -> WireError:
    """The error the client would have got, saying what the reviewer (or nobody) decided."""
    error = held.refusal
    if decided["decision"] == "expired":
        note = _("No reviewer decided on it in time.")
    elif decided.get("comment"):
        note = _("A reviewer rejected it: %(comment)s") % {"comment": decided["comment"]}
    else:
        note = _("A reviewer rejected it.")
    return WireError(
        error.status,
        f"{error.message} {note}",
        type_=error.type,
        code=error.code,
        param=error.param,
        retry_after=error.retry_after,
        retryable=error.retryable,
    )


def taken_over(held: Held, decided: dict[str, Any], usage_sink) -> tuple[list[tuple[bytes, bytes]], dict[str, Any]]:
    """The reviewer's answer as a ``chat.completion`` (usage zero) and its headers; records the ledger row
    that says a human answered (no tokens, model and provider ``human``)."""
    result = decided.get("result")
    text = result if isinstance(result, str) else wire.dumps(result).decode()
    body = wire.completion(
        completion_id=f"chatcmpl-{held.request_id}",
        model=held.request.model,
        text=text,
        tool_calls=None,
        finish_reason="stop",
        input_tokens=0,
        output_tokens=0,
    )
    usage_sink.record(
        {
            "agent": held.principal.agent,
            "session_id": held.session,
            "source": "gateway",
            "request_id": held.request_id,
            "operation": held.operation,
            "model": "human",
            "requested_model": held.request.model,
            "provider": "human",
            "handler": "human",
            "input_tokens": 0,
            "output_tokens": 0,
            "cached_tokens": 0,
            "cache_hit": False,
            "escalation": held.escalation_id,
        }
    )
    info = [
        (b"x-agentops-cache", b"bypass"),
        (b"x-agentops-handler", b"human"),
        (b"x-agentops-model", b"human"),
        *held.review_headers(),
    ]
    return info, body
