"""Sensitive tool calls in gateway answers (the agent's ``gateway_tool_review`` setting).

Every tool call and legacy ``function_call`` an answer carries — whatever the request listed, streamed or
not — is put to the escalation policy as a permission request (the same
``review.actions.request_action`` the REST API uses: operation = the function's name, arguments = its
arguments). Calls no rule flags pass as they are. Flagged calls raise an escalation in /review/; with
``hold`` the answer waits — on the event loop, no thread held — for the reviewer and is then rewritten with
the decision (approved: unchanged; modified: the reviewer's arguments; taken over: the reviewer's result as
the answer's text; rejected or expired: the call is removed and the text says why). With ``annotate`` the
answer goes out at once and the response headers name the escalations.

A call is known by its POSITION in the answer (tool calls in order, then the legacy ``function_call``):
providers may leave ids out or repeat one, so an id cannot say which decision belongs to which call. A
hold that ends before a reviewer decided closes the escalation at that moment (``review.actions.
close_unwaited``): nobody would act on a later decision, so nobody may make one.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from asgiref.sync import sync_to_async

from agentops.lib.longpoll import wait_for_change
from agentops.runs.models import Agent
from review import actions
from review.models import ActionRequest

WAITER = "gateway"


def calls_of(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every call the assistant ``message`` makes, in answer order: its tool calls, then a legacy
    ``function_call`` (as ``{"function": …, "legacy": True}``). The index in this list keys the call."""
    calls = [call for call in message.get("tool_calls") or () if isinstance(call, dict)]
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        calls.append({"type": "function", "function": legacy, "legacy": True})
    return calls


def ask_for_calls(
    agent_id: int, agent: str, session_id: str, message: Mapping[str, Any], prompt: str, model: str, *, held: bool
) -> list[tuple[int, Any]]:
    """Record a permission request per call in ``message``; return ``(position, request)`` for those that
    wait for a reviewer. ``held``: a gateway hold waits for them (recorded, so that beat can close them if
    that hold vanishes)."""
    pending = []
    for position, call in enumerate(calls_of(message)):
        function = call.get("function") or {}
        name = str(function.get("name") or "tool")[:100]
        action = actions.request_action(
            Agent(pk=agent_id, name=agent),
            operation=name,
            session_id=session_id[:200],
            arguments=_arguments(function.get("arguments")),
            context={
                "user_input": prompt[:20_000],
                "agent_analysis": f"{model} proposed this {'function' if call.get('legacy') else 'tool'} call "
                "in an answer through the OpenAI gateway.",
                "tool_call_id": call.get("id"),
                "position": position,
                **({"waiter": WAITER} if held else {}),  # see review.actions.close_orphaned_holds
            },
        )
        # A call an auto-reject policy row refused is "decided" already: a hold removes it like a rejected one.
        if action.escalation_id is not None or (held and action.status == ActionRequest.Status.REJECTED):
            pending.append((position, action))
    return pending


def _arguments(raw: Any) -> dict[str, Any]:
    """A tool call's arguments (a JSON string) as an object; anything else is kept under ``_raw``."""
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {"_raw": str(raw)}
    return parsed if isinstance(parsed, dict) else {"_raw": parsed}


async def decisions_for(
    action_ids: Sequence[int], timeout: float, channel: str, gone: threading.Event | None = None
) -> dict[int, dict[str, Any]]:
    """Wait (concurrently, at most ``timeout`` s, or until ``gone`` is set: the client disconnected) for a
    decision on each request. A request still pending at the end is closed at once as unwaited
    (``channel`` names the waiter in the audit log) and counts as expired — the safe default, reject
    (DESIGN.md §6); a decision that won the race counts as made."""
    loop = asyncio.get_running_loop()
    began = loop.time()

    def left() -> bool:
        return gone is not None and gone.is_set()

    async def read(action_id: int):
        return await ActionRequest.objects.with_decision().filter(pk=action_id).afirst()

    async def one(action_id: int) -> tuple[int, dict[str, Any]]:
        action = await wait_for_change(
            "review.queue",
            lambda: read(action_id),
            lambda a: a is None or a.decision_made() is not None or left(),  # re-checked at least every 2 s
            timeout,
        )
        if action is not None and action.decision_made() is None and action.escalation_id is not None:
            why = "the client disconnected" if left() else f"the hold ended after {timeout:g} s"
            waited = round(loop.time() - began, 1)
            await sync_to_async(actions.close_unwaited)(action.escalation_id, channel=channel, waited=waited, why=why)
            action = await read(action_id)
        decision = action.decision_made() if action is not None else None
        return action_id, decision or {"decision": "expired", "comment": ""}

    return dict(await asyncio.gather(*(one(pk) for pk in action_ids)))


def decided_by_position(pending: Sequence[tuple[int, Any]], decided: Mapping[int, dict[str, Any]]) -> dict:
    """The decisions keyed by call position (``pending`` pairs positions with permission requests)."""
    return {position: decided[action.pk] for position, action in pending}


def apply_decisions(
    message: dict[str, Any], decided: Mapping[int, dict[str, Any]]
) -> tuple[dict[str, Any], str | None]:
    """The assistant ``message`` rewritten by the decisions (keyed by call position, see ``calls_of``),
    and the new finish_reason when no call is left (else None)."""
    tools, legacy, notes = [], None, []
    for position, call in enumerate(calls_of(message)):
        decision = decided.get(position) or {"decision": "approved"}
        function = call.get("function") or {}
        name = function.get("name")
        verdict = decision["decision"]
        if verdict == "modified":
            function = {**function, "arguments": json.dumps(decision.get("arguments") or {})}
            call = {**call, "function": function}
        if verdict in ("approved", "modified"):
            if call.get("legacy"):
                legacy = function
            else:
                tools.append(call)
        elif verdict == "taken_over":
            result = decision.get("result")
            notes.append(result if isinstance(result, str) else json.dumps(result))
        elif verdict == "expired":  # nobody decided: say so, never that a reviewer did
            notes.append(f"No reviewer decided on the call to `{name}` in time, so it was not made.")
        else:
            comment = decision.get("comment") or ""
            notes.append(f"The call to `{name}` was {verdict} by a reviewer" + (f": {comment}" if comment else "."))
    rewritten = {**message}
    if tools:
        rewritten["tool_calls"] = tools
    else:
        rewritten.pop("tool_calls", None)
    if legacy is not None:
        rewritten["function_call"] = legacy
    else:
        rewritten.pop("function_call", None)
    if notes:
        rewritten["content"] = "\n".join(filter(None, [message.get("content") or "", *notes]))
    return rewritten, (None if tools or legacy is not None else "stop")
