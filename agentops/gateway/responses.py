"""``/v1/responses``: OpenAI's Responses API through the same guarded chat path as ``/v1/chat/completions``.

Nothing of the guard is forked. A request runs as the chat job (handling.chat_job: key, in-flight slot, rate
limit, cache, reservation, retries, breakers, fallback, tool review and its hold, ledger, metrics, trace,
``X-Agentops-Overhead-Ms``) with its own ``parse``: the Responses body is validated, the conversation of its
``previous_response_id`` is loaded (the agent's own stored answers only) and the whole is translated to a
chat completion (responses_wire). The answer leaves through ``TranslatingSend``, which sits between the
chat path and the client: a JSON answer becomes a response object, a stream's chunks become Responses'
typed events (responses_stream), and the final response is stored (``store``, default true) before its
last byte is sent, so a client that continues from it at once finds it. Errors keep OpenAI's shape, which
the Responses API shares.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import Executor
from typing import Any

import structlog
from django.db import InterfaceError, OperationalError, close_old_connections

from agentops.gateway import wire
from agentops.gateway.actions.responses import delete_response, find_response, save_response
from agentops.gateway.admission import authenticate, database_unavailable, rate_limit
from agentops.gateway.handling import chat_job
from agentops.gateway.responses_stream import ResponsesEvents
from agentops.gateway.responses_wire import (
    ResponsesRequest,
    chat_request,
    not_found,
    parse_responses_request,
    response_object,
    shell,
)
from agentops.gateway.wire import ChatRequest, WireError

log = structlog.get_logger("agentops.gateway")


class Turn:
    """One ``/v1/responses`` request, shared by its job thread (which parses it) and the event loop (which
    translates and stores its answer). ``request`` is set last, once everything else is: the loop translates
    only the answer of a request that was understood (an earlier error passes as it is)."""

    def __init__(self, request_id: str) -> None:
        self.response_id = f"resp_{request_id}"
        self.agent_id: int | None = None
        self.items: list[dict[str, Any]] = []  # the conversation up to this turn's input
        self.request: ResponsesRequest | None = None
        self.translated = False  # the answer left the job as a response object already (see _JobOutbox)

    def job(self, raw: bytes, headers: dict[str, str], outbox, started: float, request_id: str) -> None:
        chat_job(raw, headers, _JobOutbox(outbox, self), started, request_id, parse=self.parse)

    def parse(self, raw: bytes, principal) -> ChatRequest:
        request = parse_responses_request(raw)
        history: list[dict[str, Any]] = []
        if request.previous_response_id:
            stored = find_response(request.previous_response_id, principal.agent_id)
            if stored is None:  # another agent's id is as unknown as a missing one
                raise not_found(request.previous_response_id, param="previous_response_id")
            history = list(stored.items)
        chat = chat_request(request, history)
        self.items = [*history, *request.items]
        self.agent_id = principal.agent_id
        self.request = request
        return chat

    def save(self, response: dict[str, Any]) -> None:
        """Keep the answer (on a thread): what GET and a later previous_response_id read."""
        if not self.request.store:
            return
        try:
            save_response(self.response_id, self.agent_id, response, [*self.items, *response["output"]])
        except Exception:  # the answer is on its way regardless; only its retrieval is lost
            log.warning("gateway.response_not_stored", response_id=self.response_id, exc_info=True)

    def save_and_close(self, response: dict[str, Any]) -> None:
        """``save`` from the event loop's side (a pool thread of its own): its connection goes back after."""
        try:
            self.save(response)
        finally:
            close_old_connections()


class _JobOutbox:
    """The job's outbox (app.Outbox) for a Responses turn: an answer the job sends whole (no hold, no stream)
    is translated and stored right there, on the job's thread and its database connection, so that it costs
    no hop back to a thread from the event loop. Everything else passes to ``TranslatingSend``."""

    __slots__ = ("_outbox", "_turn")

    def __init__(self, outbox, turn: Turn) -> None:
        object.__setattr__(self, "_outbox", outbox)
        object.__setattr__(self, "_turn", turn)

    def __getattr__(self, name: str) -> Any:  # gone, slot, holding … are the real outbox's
        return getattr(self._outbox, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._outbox, name, value)

    def put(self, *item: Any) -> None:
        turn = self._turn
        if item[0] == "reply" and item[1] == 200 and turn.request is not None:
            response = response_object(turn.request, turn.response_id, json.loads(item[3]))
            turn.save(response)
            turn.translated = True
            item = (*item[:3], wire.dumps(response))
        self._outbox.put(*item)


class TranslatingSend:
    """The ASGI ``send`` of a ``/v1/responses`` request: the chat path's answer in, the Responses answer out."""

    def __init__(self, send, turn: Turn, executor: Executor) -> None:
        self._send = send
        self._turn = turn
        self._executor = executor
        self._start: dict[str, Any] | None = None
        self._events: ResponsesEvents | None = None
        self._passthrough = False
        self._buffer = b""
        self._ended = False

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            await self._begin(message)
        elif self._passthrough:
            await self._send(message)
        elif self._events is None:
            await self._whole(message)
        else:
            await self._stream(message)

    async def _begin(self, message: dict[str, Any]) -> None:
        request = self._turn.request
        if message["status"] != 200 or request is None or self._turn.translated:
            self._passthrough = True
            await self._send(message)
            return
        streamed = any(n == b"content-type" and v.startswith(b"text/event-stream") for n, v in message["headers"])
        if not streamed:
            self._start = message  # its content-length waits for the translated body
            return
        self._events = ResponsesEvents(shell(request, self._turn.response_id))
        await self._send(message)
        await self._send({"type": "http.response.body", "body": b"".join(self._events.start()), "more_body": True})

    async def _whole(self, message: dict[str, Any]) -> None:
        response = response_object(self._turn.request, self._turn.response_id, json.loads(message["body"]))
        await self._store(response)
        body = wire.dumps(response)
        headers = [
            (name, str(len(body)).encode() if name == b"content-length" else value)
            for name, value in self._start["headers"]
        ]
        await self._send({**self._start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})

    async def _stream(self, message: dict[str, Any]) -> None:
        self._buffer += message.get("body", b"")
        out: list[bytes] = []
        while b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            out += await self._chat_event(event)
        more = message.get("more_body", False)
        if not more:
            out += await self._end()  # a stream that ended without [DONE] still ends its response
        if out or not more:
            await self._send({"type": "http.response.body", "body": b"".join(out), "more_body": more})

    async def _chat_event(self, event: bytes) -> list[bytes]:
        if self._ended:
            return []
        out: list[bytes] = []
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return out + await self._end()
            chunk = json.loads(payload)
            if "error" in chunk and "choices" not in chunk:  # the upstream broke after the stream began
                self._ended = True
                return out + self._events.failed(chunk["error"] if isinstance(chunk["error"], dict) else {})
            out += self._events.feed(chunk)
        return out

    async def _end(self) -> list[bytes]:
        if self._ended:
            return []
        self._ended = True
        response, out = self._events.finish()
        await self._store(response)
        return [*out, self._events.completed(response)]

    async def _store(self, response: dict[str, Any]) -> None:
        if self._turn.request.store:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._turn.save_and_close, response)


def stored_job(headers: dict[str, str], response_id: str, method: str) -> tuple[int, bytes]:
    """``GET`` / ``DELETE /v1/responses/{id}``: the agent's own stored answer, else 404 (another agent's too)."""
    try:
        principal = authenticate(headers)
        rate_limit(principal)
        if method == "DELETE":
            if not delete_response(response_id, principal.agent_id):
                raise not_found(response_id)
            return 200, wire.dumps({"id": response_id, "object": "response", "deleted": True})
        stored = find_response(response_id, principal.agent_id)
        if stored is None:
            raise not_found(response_id)
        return 200, wire.dumps(stored.body)
    except WireError as error:
        return error.status, error.body()
    except (OperationalError, InterfaceError):
        return database_unavailable().status, database_unavailable().body()
    finally:
        close_old_connections()
