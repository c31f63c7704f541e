"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: Anthropic clients (the ``anthropic`` SDK,
Claude Code) through the same guard as chat completions.

One job per request on a gateway thread (app.py): the key — ``x-api-key`` or a bearer token — its in-flight
slot and rate limit (``handling.run_job``), the request validated and translated (``messages_wire``), the
guarded call (``handling.guarded_call``: cache, reservation, retries, breakers, fallback, ledger), and the
answer translated back — a message, or its stream events (``messages_stream``). Every ``tool_use`` block of
an answer is put to tool review like a chat tool call (by its position among the answer's calls); a held
answer waits on the event loop (``hold_reply`` / ``hold_events``) and is rewritten by the decisions. A call
held for the human in the gateway (human_hold.py) is answered by ``_held_job`` once the reviewer decided.
Errors have Anthropic's shape (``{"type": "error", "error": {"type", "message"}}``) and our statuses.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import structlog
from django.db import InterfaceError, OperationalError, close_old_connections

from agentops.gateway import human_hold, messages_wire, wire
from agentops.gateway.admission import authenticate, authorize_model, bearer_key, database_unavailable
from agentops.gateway.handling import (
    DEFAULT_OPERATION,
    _count,
    _job,
    annotations,
    body_of,
    guarded_call,
    overhead,
    resolve,
    review,
    run_job,
    tool_review_mode,
)
from agentops.gateway.human_hold import Held
from agentops.gateway.messages_stream import ChunkEvents, error_event, events_of
from agentops.gateway.messages_wire import MessagesRequest
from agentops.gateway.tool_review import apply_decisions
from agentops.gateway.wire import WireError
from agentops.runtime.errors import ProviderError
from agentops.runtime.providers.anthropic_native import NATIVE_REQUEST
from agentops.wiring import guard_deps

log = structlog.get_logger("agentops.gateway")


def with_api_key(headers: dict[str, str]) -> dict[str, str]:
    """Anthropic clients send the key as ``x-api-key``: it counts as the bearer token (a bearer wins)."""
    key = headers.get("x-api-key", "").strip()
    if key and not bearer_key(headers):
        return {**headers, "authorization": f"Bearer {key}"}
    return headers


def messages_job(raw: bytes, headers: dict[str, str], outbox, started: float, request_id: str) -> None:
    """Answer one Messages request through ``outbox`` (see app.Outbox)."""
    run_job(raw, with_api_key(headers), outbox, started, request_id, _answer, messages_wire.render_error)


def _answer(principal, raw: bytes, headers: dict[str, str], outbox, started: float, request_id: str, after) -> None:
    request = messages_wire.parse(raw, headers)
    authorize_model(principal, request.model)
    _reply(principal, request, headers, outbox, started, request_id, after)


def _reply(
    principal,
    request: MessagesRequest,
    headers: dict[str, str],
    outbox,
    started: float,
    request_id: str,
    after: list,
    approved: Held | None = None,
) -> None:
    """The guarded call and its message (``approved``: a held call a reviewer let go ahead past its budget)."""
    call = guarded_call(
        principal,
        request.chat,
        headers,
        request_id,
        after,
        metadata={NATIVE_REQUEST: request.native},
        cache=not request.native_only,
        outbox=outbox,
        approved=approved,
        held_job=functools.partial(_held_job, request),
    )
    if call is None:  # held for the human in the gateway: _held_job answers once they decided
        return
    result, info = call.result, call.info
    message_id = f"msg_{request_id}"
    if result.stream is not None:
        close_old_connections()  # do not hold a pooled connection while the stream flows
        _stream(principal, request, result, outbox, started, info, call.session, message_id)
        return
    message = messages_wire.message_of(body_of(result, request_id, keep_native=True), message_id)
    mode = "stream" if request.stream else "json"
    info.append((b"x-agentops-overhead-ms", overhead(started, result, mode)))
    model = str(message.get("model") or result.model)
    pending = review(principal, request.chat, messages_wire.calls_message(message), model, call.session)
    if pending:
        info += annotations(pending)
    hold = bool(pending) and tool_review_mode(principal) == "hold"
    if request.stream:  # an answer that was not streamed upstream (simulated, rules, cache) as events
        outbox.put("start", info)
        if hold:
            outbox.put("hold_events", pending, lambda by_call: events_of(decided(message, by_call)))
        else:
            for event in events_of(message):
                outbox.put("data", event)
        outbox.put("end")
        return
    if hold:
        outbox.put("hold_reply", pending, lambda by_call: (200, info, wire.dumps(decided(message, by_call))))
        return
    outbox.put("reply", 200, info, wire.dumps(message))


def _held_job(request: MessagesRequest, held: Held, decided: dict[str, Any], outbox) -> None:
    """A Messages call held for the human in the gateway, once decided (see handling.held_job): approved —
    it goes ahead once past its budget; taken over — the reviewer's text as a message; else the refusal,
    all in Anthropic's shape."""
    mode = "stream" if request.stream else "json"

    def work(after: list) -> None:
        verdict = decided["decision"]
        if outbox.gone.is_set():  # nobody is listening any more: ask no upstream
            raise human_hold.refused(held, decided)
        if verdict in ("approved", "modified") and held.reason == human_hold.BUDGET_EXCEEDED:
            log.info("gateway.hold_approved", escalation=held.escalation_id, request_id=held.request_id)
            _reply(held.principal, request, held.headers, outbox, time.perf_counter(), held.request_id, after, held)
        elif verdict == "taken_over":
            info, body = human_hold.taken_over(held, decided, guard_deps().usage)
            message = messages_wire.message_of(body, f"msg_{held.request_id}")
            _count(200, mode)
            if request.stream:
                outbox.put("start", info)
                for event in events_of(message):
                    outbox.put("data", event)
                outbox.put("end")
            else:
                outbox.put("reply", 200, info, wire.dumps(message))
        else:
            raise human_hold.refused(held, decided)

    _job(work, outbox, held.request_id, mode, messages_wire.render_error)


def decided(message: dict[str, Any], by_call: dict[int, dict]) -> dict[str, Any]:
    """A held message rewritten by the reviewers' decisions (keyed by the position of its calls)."""
    reviewed, finish = apply_decisions(messages_wire.calls_message(message), by_call)
    return messages_wire.rewritten(message, reviewed, finish)


def _stream(
    principal, request: MessagesRequest, result, outbox, started: float, info: list, session: str, message_id: str
) -> None:
    """The guard's chunks as Anthropic events as they arrive; ``tool_use`` blocks kept back for review
    (unless the agent's review is ``off``) and sent, rewritten or replaced once decided."""
    stream = result.stream
    outbox.put("start", [*info, (b"x-agentops-overhead-ms", overhead(started, result, "stream"))])
    events = ChunkEvents(message_id, result.model)
    mode: str | None = None  # read when the first call shows up: a stream without calls costs no query
    try:
        for _payload, chunk in stream:
            if outbox.gone.is_set():
                stream.close()
                return
            if mode is None and events.carries_call(chunk):
                mode = tool_review_mode(principal)
                events.hold_calls = mode != "off"
            for event in events.feed(chunk):
                outbox.put("data", event)
    except ProviderError as exc:  # the upstream broke after the stream began: no retry can repair that
        outbox.put("data", error_event(503, f"The upstream stream failed: {exc.message}"))
        outbox.put("end")
        return
    finally:
        stream.close()
        close_old_connections()
    usage = _settled_usage(stream, events.usage)
    if events.hold_calls:
        message = events.held_message()
        pending = review(principal, request.chat, message, stream.model, session)
        if pending and mode == "hold":
            outbox.put("hold_events", pending, lambda by_call: events.tail(*apply_decisions(message, by_call), usage))
            outbox.put("end")
            return
    for event in events.tail(None, None, usage):
        outbox.put("data", event)
    outbox.put("end")


def _settled_usage(stream, upstream: dict[str, Any] | None) -> dict[str, Any]:
    """The usage the ledger settled (the upstream's, or what was counted when it sent none), OpenAI-shaped,
    with the upstream's cache writes."""
    usage = dict(upstream or {})
    settled = getattr(stream, "result", None)
    if settled is not None:
        usage["prompt_tokens"] = settled.input_tokens
        usage["completion_tokens"] = settled.output_tokens
        usage["prompt_tokens_details"] = {"cached_tokens": settled.cached_tokens}
    return usage


def count_tokens_job(raw: bytes, headers: dict[str, str]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """``{"input_tokens": n}``: the bound a Messages call's reservation holds for this prompt (the largest
    over the models that may answer it), counted without calling any upstream."""
    try:
        headers = with_api_key(headers)
        authenticate(headers)
        request = messages_wire.parse(raw, headers, count_only=True)
        operation = headers.get("x-operation", "").strip()[:50] or DEFAULT_OPERATION
        route = resolve(guard_deps().config.get(), request.model, operation)
        tokens = wire.input_token_bound(request.chat, [target.model for target in route.chain])
        return 200, [], wire.dumps({"input_tokens": tokens})
    except WireError as error:
        return messages_wire.render_error(error)
    except (OperationalError, InterfaceError):
        return messages_wire.render_error(database_unavailable())
    except Exception:
        log.exception("gateway.count_tokens_failed")
        return messages_wire.render_error(WireError(500, "The gateway failed unexpectedly; the error is logged."))
    finally:
        close_old_connections()
