"""The OpenAI-compatible gateway: a raw ASGI app for ``/v1/…`` in front of the guard pipeline.

Why not a Django view: this is the one path whose overhead users compare with a direct call (goal: a
couple of milliseconds), and Django's request/response cycle and middleware cost more than that on their
own. So the event loop does only the HTTP (read the body, send the answer or the stream, notice a client
that went away) and each request runs as ONE job on the gateway's thread pool — key check, rate limit,
model resolution, ``guarded_llm`` (cache → reservation → fallback chain → settle), the answer's body —
posting what to send back through an ``Outbox``. A streamed answer is read by the same job chunk by chunk
and settled when it ends; a client that disconnects stops it and only what was produced is settled.
Waiting for a reviewer (a held tool call, or a call held for the human in the gateway: human_hold.py)
happens on the event loop, holding no thread; the decided call's answer is one more job.

Every request is one SERVER span (a child of the caller's span when it sends a W3C ``traceparent``); the jobs
run in a copy of the request's context, so the guarded call's span and its ``chat {model}`` attempts hang
under it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from agentops.gateway import human_hold, messages_wire, responses, wire
from agentops.gateway.admission import (
    authenticate,
    bearer_key,
    database_unavailable,
    invalid_api_key,
    log_refused,
)
from agentops.gateway.embeddings import embeddings_job
from agentops.gateway.handling import catalog, chat_job, held_job
from agentops.gateway.messages import count_tokens_job, messages_job, with_api_key
from agentops.gateway.tool_review import apply_decisions, decided_by_position, decisions_for
from agentops.gateway.wire import WireError
from agentops.keys.tokens import known_bad
from agentops.lib.inflight import release as release_slot
from agentops.observability import metrics

log = structlog.get_logger("agentops.gateway")
tracer = trace.get_tracer("agentops.gateway")

CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
MODELS_PATH = "/v1/models"
RESPONSES_PATH = "/v1/responses"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(settings.GATEWAY_THREADS, thread_name_prefix="gateway")
        return _pool


HOLD_CLOSE_GRACE_SECONDS = 5.0


class Outbox:
    """What a job thread hands to the event loop, in order: ``("reply", status, headers, body)``, or
    ``("start", headers)`` then ``("data", bytes)``… ``("end",)``, or a hold (``("hold", …)``; for the
    human in the gateway ``("hold_human", Held)``: the answer comes from a job started once the reviewer
    decided, in ``followups``). ``gone`` is set when the client disconnected."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.gone = threading.Event()
        self.slot: tuple[int, str] | None = None  # the key's in-flight slot, once the job took it
        self.seen: tuple[str, str] | None = None  # (agent, session), marked active when the slot is released
        self.holding = False  # a hold was posted: the answer waits for reviewers after the job has ended
        self.followups: list[asyncio.Future] = []  # jobs answering a call once its reviewer decided

    def put(self, *item: Any) -> None:
        if item[0].startswith("hold"):  # set in the job's thread, before the loop sees the item
            self.holding = True
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


async def app(scope, receive, send) -> None:
    metrics.GATEWAY_IN_FLIGHT.inc()  # request tasks alive: back to 0 when every client has gone
    span = _server_span(scope)
    token = otel_context.attach(trace.set_span_in_context(span))
    status: list[int] = []

    async def send_noting_status(message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        await send(message)

    try:
        await _serve(scope, receive, send_noting_status)
    finally:
        otel_context.detach(token)
        _end_server_span(span, status[0] if status else None)
        metrics.GATEWAY_IN_FLIGHT.dec()


TRACE_HEADERS = (b"traceparent", b"tracestate")
ROUTES = {CHAT_PATH, EMBEDDINGS_PATH, MODELS_PATH, RESPONSES_PATH, MESSAGES_PATH, COUNT_TOKENS_PATH}


def _server_span(scope):
    """The request's SERVER span, continuing the caller's trace when it sent a W3C ``traceparent``."""
    carrier = {name.decode(): value.decode("latin-1") for name, value in scope["headers"] if name in TRACE_HEADERS}
    path, method = scope["path"].rstrip("/") or "/", scope["method"]
    route = path if path in ROUTES else None
    if route is None and path.startswith(RESPONSES_PATH + "/"):
        route = RESPONSES_PATH + "/{response_id}"
    elif route is None and path.startswith(MODELS_PATH + "/"):
        route = MODELS_PATH + "/{model}"
    attributes = {"http.request.method": method, "url.path": scope["path"], "url.scheme": scope.get("scheme", "http")}
    if route is not None:
        attributes["http.route"] = route
    return tracer.start_span(
        f"{method} {route}" if route else method,
        context=propagate.extract(carrier) if carrier else None,
        kind=SpanKind.SERVER,
        attributes=attributes,
    )


def _end_server_span(span, status: int | None) -> None:
    if span.is_recording():
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if status is None or status >= 500:
            span.set_status(Status(StatusCode.ERROR))
            span.set_attribute("error.type", str(status) if status is not None else "_OTHER")
    span.end()


def _in_pool(loop: asyncio.AbstractEventLoop, fn, *args) -> asyncio.Future:
    """``fn(*args)`` on a gateway thread, in a copy of this request's context (its span, so the guarded call's
    spans are its children)."""
    return loop.run_in_executor(pool(), contextvars.copy_context().run, fn, *args)


async def _serve(scope, receive, send) -> None:
    started = time.perf_counter()
    request_id = uuid.uuid4().hex
    path, method = scope["path"].rstrip("/") or "/", scope["method"]
    own = [(b"x-request-id", request_id.encode()), (b"x-agentops-request-id", request_id.encode())]
    try:
        if path == CHAT_PATH:
            if method != "POST":
                raise WireError(
                    405, f"Method {method} is not allowed on {CHAT_PATH}; use POST.", code="method_not_allowed"
                )
            _refuse_known_bad_key(scope)
            raw = await _read_body(scope, receive)
            await _chat(scope, receive, send, raw, started, request_id, own)
        elif path == EMBEDDINGS_PATH:
            if method != "POST":
                raise WireError(405, f"Method {method} is not allowed on {path}; use POST.", code="method_not_allowed")
            _refuse_known_bad_key(scope)
            raw = await _read_body(scope, receive)
            await _job(embeddings_job, scope, receive, send, raw, started, request_id, own)
        elif path == RESPONSES_PATH:
            if method != "POST":
                raise WireError(405, f"Method {method} is not allowed on {path}; use POST.", code="method_not_allowed")
            _refuse_known_bad_key(scope)
            raw = await _read_body(scope, receive)
            turn = responses.Turn(request_id)
            reply = responses.TranslatingSend(send, turn, pool())
            await _chat(scope, receive, reply, raw, started, request_id, own, job=turn.job)
        elif path.startswith(RESPONSES_PATH + "/"):
            if method not in ("GET", "DELETE"):
                raise WireError(405, f"Method {method} is not allowed on {path}.", code="method_not_allowed")
            _refuse_known_bad_key(scope)
            loop = asyncio.get_running_loop()
            job = responses.stored_job
            status, body = await _in_pool(loop, job, _headers(scope), path[len(RESPONSES_PATH) + 1 :], method)
            await _respond(send, status, body, own)
        elif path in (MESSAGES_PATH, COUNT_TOKENS_PATH):
            await _messages(scope, receive, send, path, started, request_id, own)
        elif path == MODELS_PATH or path.startswith(MODELS_PATH + "/"):
            if method != "GET":
                raise WireError(405, f"Method {method} is not allowed on {path}; use GET.", code="method_not_allowed")
            _refuse_known_bad_key(scope)
            loop = asyncio.get_running_loop()
            status, body = await _in_pool(loop, _models_job, _headers(scope), path)
            await _respond(send, status, body, own)
        else:
            raise WireError(404, f"Unknown request URL: {method} {scope['path']}.", code="unknown_url")
    except WireError as error:
        log_refused(error, request_id)
        await _respond(send, error.status, error.body(), own + error.headers()[1:])


async def _messages(scope, receive, send, path: str, started: float, request_id: str, own: list) -> None:
    """The Anthropic routes: errors in Anthropic's shape, the key from ``x-api-key`` or the bearer."""
    try:
        if scope["method"] != "POST":
            raise WireError(405, f"Method {scope['method']} is not allowed on {path}; use POST.")
        if known_bad(bearer_key(with_api_key(_headers(scope)))):
            raise invalid_api_key()
        raw = await _read_body(scope, receive)
    except WireError as error:
        log_refused(error, request_id)
        status, headers, body = messages_wire.render_error(error)
        await _respond(send, status, body, own + headers)
        return
    if path == MESSAGES_PATH:
        await _chat(scope, receive, send, raw, started, request_id, own, job=messages_job)
        return
    loop = asyncio.get_running_loop()
    status, headers, body = await _in_pool(loop, count_tokens_job, raw, _headers(scope))
    await _respond(send, status, body, own + headers)


# --- HTTP plumbing -----------------------------------------------------------------------------------


HEADERS = "agentops.headers"  # the request's headers decoded, kept in its scope: the key check and the job share them


def _headers(scope) -> dict[str, str]:
    headers = scope.get(HEADERS)
    if headers is None:
        headers = scope[HEADERS] = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    return headers


def _refuse_known_bad_key(scope) -> None:
    """A malformed key, or one found bad seconds ago (keys.tokens.known_bad), is refused here on the event
    loop: a flood of bad keys takes no gateway thread and no database read from good ones."""
    if known_bad(bearer_key(_headers(scope))):
        raise invalid_api_key()


async def _read_body(scope, receive) -> bytes:
    """The whole body; its size is bounded before we get here (agentops/lib/bodylimit.py wraps the application)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise WireError(400, "The client went away before sending the whole body.")
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _watch_disconnect(receive, outbox: Outbox) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    outbox.gone.set()


async def _chat(scope, receive, send, raw: bytes, started: float, request_id: str, own: list, job=chat_job) -> None:
    await _job(job, scope, receive, send, raw, started, request_id, own)


async def _job(run, scope, receive, send, raw: bytes, started: float, request_id: str, own: list) -> None:
    """Run ``run(raw, headers, outbox, started, request_id)`` on a gateway thread and send what it posts."""
    loop = asyncio.get_running_loop()
    outbox = Outbox(loop)
    job = _in_pool(loop, run, raw, _headers(scope), outbox, started, request_id)
    watcher = asyncio.ensure_future(_watch_disconnect(receive, outbox))
    answer = asyncio.ensure_future(_send_answer(send, outbox, own))
    try:
        # Whichever ends first: the answer is sent, or the client went away. A client that leaves ends
        # the request here, whatever the answer was waiting for (the job's next item, a reviewer).
        await asyncio.wait({answer, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        outbox.gone.set()  # a job still streaming stops at its next chunk and settles what it produced
        if outbox.holding and not answer.done():
            # A hold sees `gone` at its next re-check (≤ 2 s) and closes what nobody decided, saying the client
            # left (DESIGN.md §6): cancelling it now would leave those items open for a reviewer to approve.
            await asyncio.wait({answer}, timeout=HOLD_CLOSE_GRACE_SECONDS)
        answer.cancel()
        for work in [job, *outbox.followups]:
            try:
                await work
            except Exception:
                log.exception("gateway.job_failed", request_id=request_id)
        if outbox.slot is not None:  # a held answer's slot (the job released any other): off the loop
            await loop.run_in_executor(None, release_slot, outbox.slot, outbox.seen)


async def _send_answer(send, outbox: Outbox, own: list) -> None:
    try:
        item = await outbox.queue.get()
        while item[0] == "hold_human":  # nothing is sent before the reviewer decided: then one more job answers
            held = item[1]
            decided = await human_hold.decision(held, outbox.gone)
            loop = asyncio.get_running_loop()
            outbox.followups.append(_in_pool(loop, held.job or held_job, held, decided, outbox))
            item = await outbox.queue.get()
        if item[0] == "reply":
            _, status, headers, body = item
            await _respond(send, status, body, own + headers)
        elif item[0] == "hold":
            status, headers, body = await _held_reply(item, outbox.gone)
            await _respond(send, status, body, own + headers)
        elif item[0] == "hold_reply":  # ("hold_reply", pending, render): render(decisions) → status, headers, body
            _, pending, render = item
            status, headers, body = render(await _decisions(pending, outbox.gone))
            await _respond(send, status, body, own + headers)
        else:  # "start": a stream
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        *own,
                        *item[1],
                    ],
                }
            )
            await _pump(send, outbox)
    except OSError:  # the client went away while we were sending
        outbox.gone.set()


async def _pump(send, outbox: Outbox) -> None:
    """Send a stream's events as the job posts them (a held tool call is waited for here)."""
    while True:
        item = await outbox.queue.get()
        kind = item[0]
        if kind == "data":
            await send({"type": "http.response.body", "body": item[1], "more_body": True})
        elif kind == "hold_stream":
            for event in await _held_events(item, outbox.gone):
                await send({"type": "http.response.body", "body": event, "more_body": True})
        elif kind == "hold_events":  # ("hold_events", pending, render): render(decisions) → the events left
            _, pending, render = item
            for event in render(await _decisions(pending, outbox.gone)):
                await send({"type": "http.response.body", "body": event, "more_body": True})
        elif kind == "hold_body":  # a whole answer sent as a stream: the events of its decided body
            _, body, include_usage, pending = item
            for event in wire.chunks_of(await _decided(body, pending, outbox.gone), include_usage):
                await send({"type": "http.response.body", "body": event, "more_body": True})
        else:  # "end"
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return


async def _decisions(pending: list, gone: threading.Event) -> dict[int, dict]:
    """The decisions on the held calls, keyed by call position; the hold ends after GATEWAY_HOLD_SECONDS
    (or when the client goes away) and closes what nobody decided by then (see tool_review.decisions_for)."""
    ids = [action.pk for _, action in pending]
    decided = await decisions_for(ids, settings.GATEWAY_HOLD_SECONDS, "gateway", gone)
    return decided_by_position(pending, decided)


async def _decided(body: dict, pending: list, gone: threading.Event) -> dict:
    """A held ``chat.completion`` body rewritten by its decisions."""
    by_call = await _decisions(pending, gone)
    choice = body["choices"][0]
    choice["message"], finish = apply_decisions(choice["message"], by_call)
    if finish is not None:
        choice["finish_reason"] = finish
    return body


async def _held_reply(item: tuple, gone: threading.Event) -> tuple[int, list, bytes]:
    _, status, headers, body, pending = item
    return status, headers, wire.dumps(await _decided(body, pending, gone))


async def _held_events(item: tuple, gone: threading.Event) -> list[bytes]:
    """A streamed answer's held tail (tool calls, finish, usage): sent as it was when every call was
    approved, else rebuilt from the rewritten message."""
    _, buffered, message, base, finish_reason, usage_event, pending = item
    by_call = await _decisions(pending, gone)
    if all(decision["decision"] == "approved" for decision in by_call.values()):
        return buffered
    rewritten, finish = apply_decisions(message, by_call)
    return wire.held_tail(base, message, rewritten, finish or finish_reason, usage_event)


def _models_job(headers: dict[str, str], path: str) -> tuple[int, bytes]:
    try:
        principal = authenticate(headers)
        entries = [entry for entry in catalog() if principal.allows_model(entry[0])]  # the key's allowed models
        if path == MODELS_PATH:
            return 200, wire.dumps(wire.model_list(entries))
        name = path[len(MODELS_PATH) + 1 :]
        for model, owner in entries:
            if model == name:
                return 200, wire.dumps(wire.model_entry(model, owner))
        raise wire.model_not_found(name)
    except WireError as error:
        return error.status, error.body()
    except (OperationalError, InterfaceError):
        return database_unavailable().status, database_unavailable().body()
    finally:
        close_old_connections()
