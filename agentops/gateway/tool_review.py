"""Sensitive tool calls in gateway answers (the agent's ``gateway_tool_review`` setting).

Every tool call an answer carries is put to the escalation policy as a permission request (the same
``review.actions.request_action`` the REST API uses: operation = the function's name, arguments = its
arguments). Calls no rule flags pass as they are. Flagged calls raise an escalation in /review/; with
``hold`` the answer waits — on the event loop, no thread held — for the reviewer and is then rewritten with
the decision (approved: unchanged; modified: the reviewer's arguments; taken over: the reviewer's result as
the answer's text; rejected or expired: the call is removed and the text says why). With ``annotate`` the
answer goes out at once and the response headers name the escalations.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from agentops.longpoll import wait_for_change


def ask_for_calls(
    agent_id: int, agent: str, session_id: str, calls: Sequence[Mapping[str, Any]], prompt: str, model: str
) -> list[tuple[str, Any]]:
    """Record a permission request per tool call; return ``(tool call id, request)`` for those that wait
    for a reviewer."""
    from agentops.models import Agent
    from review import actions

    pending = []
    for call in calls:
        function = call.get("function") or {}
        name = str(function.get("name") or "tool")[:100]
        action = actions.request_action(
            Agent(pk=agent_id, name=agent),
            operation=name,
            session_id=session_id[:200],
            arguments=_arguments(function.get("arguments")),
            context={
                "user_input": prompt[:20_000],
                "agent_analysis": f"{model} proposed this tool call in an answer through the OpenAI gateway.",
                "tool_call_id": call.get("id"),
            },
        )
        if action.escalation_id is not None:
            pending.append((str(call.get("id")), action))
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


async def decisions_for(action_ids: Sequence[int], timeout: float) -> dict[int, dict[str, Any]]:
    """Wait (concurrently, at most ``timeout`` s) for a decision on each request; a request still pending
    at the end counts as expired — the safe default, reject (DESIGN.md §6)."""
    from review.api import _actions, _decision

    async def one(action_id: int) -> tuple[int, dict[str, Any]]:
        async def read():
            return await _actions().filter(pk=action_id).afirst()

        action = await wait_for_change(
            "review.queue",
            read,
            lambda a: a is None or _decision(a) is not None,
            timeout,
        )
        decision = _decision(action) if action is not None else None
        if decision is None:
            decision = {"decision": "expired", "comment": f"no reviewer decided within {timeout:.0f} s"}
        return action_id, decision

    return dict(await asyncio.gather(*(one(pk) for pk in action_ids)))


def apply_decisions(
    message: dict[str, Any], decided: Mapping[str, dict[str, Any]]
) -> tuple[dict[str, Any], str | None]:
    """The assistant ``message`` rewritten by the decisions (keyed by tool call id), and the new
    finish_reason when no call is left (else None)."""
    kept, notes = [], []
    for call in message.get("tool_calls") or ():
        decision = decided.get(call.get("id"))
        if decision is None or decision["decision"] == "approved":
            kept.append(call)
            continue
        name = (call.get("function") or {}).get("name")
        verdict = decision["decision"]
        if verdict == "modified":
            call = {**call, "function": {**call["function"], "arguments": json.dumps(decision.get("arguments") or {})}}
            kept.append(call)
        elif verdict == "taken_over":
            result = decision.get("result")
            notes.append(result if isinstance(result, str) else json.dumps(result))
        else:  # rejected or expired
            comment = decision.get("comment") or ""
            notes.append(f"The call to `{name}` was {verdict} by a reviewer" + (f": {comment}" if comment else "."))
    rewritten = {**message}
    if kept:
        rewritten["tool_calls"] = kept
    else:
        rewritten.pop("tool_calls", None)
    if notes:
        rewritten["content"] = "\n".join(filter(None, [message.get("content") or "", *notes]))
    return rewritten, (None if kept else "stop")
