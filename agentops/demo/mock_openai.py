"""A fault-injecting mock of the OpenAI API: a raw ASGI app served by uvicorn.

Run it::

    python -m agentops.demo.mock_openai --host 127.0.0.1 --port 8099

then point any OpenAI client at ``http://127.0.0.1:8099/v1`` (any API key). It is deliberately small and
fast (a plain call is ~1 ms) because benchmarks use it as the baseline.

Endpoints
---------
``POST /v1/chat/completions``
    OpenAI's response shape with ``usage``; ``"stream": true`` gives SSE ``chat.completion.chunk`` events
    ending with ``data: [DONE]``, plus a final usage chunk when ``stream_options.include_usage`` is true.
    The answer is deterministic: ``"Mock answer to: <last user message>"``. Knobs (request body fields,
    e.g. the SDK's ``extra_body``): ``mock_words`` — exactly this many words (the answer is cut, or padded
    with lorem-ipsum filler); ``mock_content`` — this exact answer; ``mock_tool_calls`` —
    ``[{"name": …, "arguments": {…}}]``: answer with these tool calls
    (``finish_reason="tool_calls"``). ``X-Mock-Words`` header works too.
    Like a model after a tool ran: when the last message is a tool result (``role: "tool"``), the answer is
    text, ``"Mock answer from the tool: <its content>"``, and ``mock_tool_calls`` is not applied — so an agent
    loop that sends the knob on every turn (an SDK's ``extra_body``) ends after one round trip.
    Like the real API: the answer names the model's dated snapshot (``gpt-4o`` answers as
    ``gpt-4o-2024-08-06``, ``gpt-4`` as ``gpt-4-0613``; names it does not know come back as sent, like vLLM);
    tokens are counted with OpenAI's tokenizer (``o200k_base``, ``cl100k_base`` for gpt-4 / gpt-3.5):
    ``prompt_tokens`` = the message contents (images by OpenAI's tile rule) + 3 per message + 3;
    ``completion_tokens`` = the answer's tokens. ``max_tokens`` / ``max_completion_tokens`` cut the answer to
    that many tokens with ``finish_reason="length"``; reasoning models (o-series, gpt-5) refuse
    ``max_tokens`` with OpenAI's 400 ``unsupported_parameter``.
    Provider quirks the tool-call knob reproduces: an entry's ``"id"`` overrides its generated id — ``null``
    leaves the id out (as some providers do), the same string on two entries makes them share one id; a
    request that lists legacy ``functions`` (and no ``tools``) gets the first call as a legacy
    ``function_call`` (``finish_reason="function_call"``). Streamed, a tool call comes in pieces like
    OpenAI's: name, type and id in its first delta (no id when it has none), the arguments split over
    several deltas, ``index`` per call; a ``function_call`` streams the same way under ``delta.function_call``.
``POST /v1/embeddings``
    OpenAI's embeddings (``agentops.demo.mock_embeddings``): deterministic unit vectors seeded from the model
    and the input, 1536 wide (3072 for text-embedding-3-large), ``dimensions`` honoured where OpenAI allows it
    (a 400 on text-embedding-ada-002), ``encoding_format`` float or base64 (little-endian float32), usage
    counted with OpenAI's tokenizer, dated names as OpenAI answers them. Faults as for chat completions
    (``empty``: no vectors at all).
``POST /v1/responses``
    OpenAI's Responses API, answered by the same code (faults, knobs, token counts) as a chat completion:
    see mock_responses.py. Streamed as Responses' typed events.
``POST /v1/messages``, ``POST /v1/messages/count_tokens``
    Anthropic's Messages API with the same knobs and faults (``agentops/demo/mock_anthropic.py``).
``GET /v1/models``
    A model list (a few default ids plus every model seen).

Faults
------
Chosen per request, first match wins: the ``X-Mock-Fault`` request header; the model's script queue (FIFO,
one fault consumed per request); the ``*`` script queue; the model's rates; the ``*`` rates; else ``ok``.

=================  ==================================================================================
``ok``             normal answer
``delay:<ms>``     wait, then answer normally
``hang[:<ms>]``    wait far past any client timeout (default 600 s, or until the client goes away), then
                   drop the connection
``reset``          drop the connection (TCP RST) without any response
``cut``            headers and half of the body, then drop the connection
``<status>[:<s>]`` that HTTP status with an OpenAI error body; ``429:<s>`` adds ``Retry-After: <s>``
                   (``429``, ``500``, ``503``, ``401``, ``400`` … any 4xx/5xx)
``malformed``      200 with a truncated JSON body (streaming: a truncated chunk)
``slow_body:<ms>`` headers at once, then the body trickled in 10 pieces over ``<ms>``
``empty``          200 with empty content
``refusal``        200 with "I'm sorry, but I can't help with that."
``unsure``         200 with "I don't know the answer to that." (result validation rejects it)
``terse``          200 with "Yes." (shorter than the seed's 10 characters)
=================  ==================================================================================

Control (no auth)
-----------------
``POST /_mock/script`` ``{"model": m, "faults": [...]}`` appends to the model's queue;
``POST /_mock/rates`` ``{"model": m, "rates": {"500": 0.1, "429:1": 0.05}, "seed": 1}`` replaces the model's
rates (a seeded RNG per entry, so a sequence is reproducible); ``POST /_mock/reset`` clears everything;
``GET /_mock/stats`` requests per model, faults served, last request (headers and body) and a short history
(time, model, fault, SDK retry count) for checking retry timing. ``model`` may be ``*`` (any model).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from agentops.demo import mock_anthropic
from agentops.demo.mock_embeddings import EmbeddingsRefused, embeddings_response
from agentops.demo.mock_http import (  # the plumbing shared with the Anthropic side (mock_anthropic.py)
    CANNED,
    FILLER,  # noqa: F401
    HANG_SECONDS,
    _drop_connection,
    _respond,
    _sleep_unless_disconnected,
    _until_disconnect,  # noqa: F401
    answer_for,
    valid_fault,
)
from agentops.demo.mock_responses import chat_of, events_of, response_of
from agentops.demo.mock_usage import (  # noqa: F401  count_tokens, prompt_tokens: tests use them here
    after_tool_result,
    answered_name,
    approx_tokens,
    count_tokens,
    cut_to_tokens,
    prompt_tokens,
    text_of,
    warm,
)
from agentops.runtime.model_names import is_reasoning_model

try:  # the faster event loop when it is installed
    import uvloop  # noqa: F401

    LOOP = "uvloop"
except ImportError:
    LOOP = "asyncio"

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "mock-small", "mock-large")
SLOW_BODY_PIECES = 10
_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request (mock fault 400)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (mock fault 401)."),
    403: ("permission_error", None, "You are not allowed to use this model (mock fault 403)."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (mock fault 404)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (mock fault 429)."),
    500: ("server_error", None, "The server had an error while processing your request (mock fault 500)."),
    503: (
        "server_error",
        None,
        "The engine is currently overloaded, please try again later (mock fault 503).",
    ),
}


@dataclass
class _Rates:
    table: list[tuple[str, float]]
    rng: random.Random

    def draw(self) -> str | None:
        r = self.rng.random()
        acc = 0.0
        for fault, p in self.table:
            acc += p
            if r < acc:
                return fault
        return None


@dataclass
class MockState:
    """Everything the control endpoints change; one instance per server process."""

    scripts: dict[str, deque[str]] = field(default_factory=dict)
    rates: dict[str, _Rates] = field(default_factory=dict)
    by_model: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    by_model_fault: dict[str, Counter] = field(default_factory=dict)
    history: deque = field(default_factory=lambda: deque(maxlen=500))
    last_request: dict[str, Any] | None = None
    served: int = 0

    def next_fault(self, model: str, header_fault: str | None) -> str:
        if header_fault:
            return header_fault
        for name in (model, "*"):
            queue = self.scripts.get(name)
            if queue:
                return queue.popleft()
        for name in (model, "*"):
            rates = self.rates.get(name)
            if rates is not None:
                fault = rates.draw()
                if fault is not None:
                    return fault
                return "ok"
        return "ok"

    def record(self, model: str, fault: str, headers: dict[str, str], body: Any, path: str) -> None:
        self.served += 1
        self.by_model[model] += 1
        self.faults[fault] += 1
        self.by_model_fault.setdefault(model, Counter())[fault] += 1
        self.last_request = {"path": path, "headers": headers, "body": body}
        self.history.append(
            {
                "t": time.time(),
                "model": model,
                "fault": fault,
                "stream": bool(isinstance(body, dict) and body.get("stream")),
                "retry_count": headers.get("x-stainless-retry-count"),
            }
        )

    def reset(self) -> None:
        self.__init__()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.served,
            "by_model": dict(self.by_model),
            "faults": dict(self.faults),
            "by_model_fault": {m: dict(c) for m, c in self.by_model_fault.items()},
            "pending_scripts": {m: list(q) for m, q in self.scripts.items() if q},
            "rates": {m: dict(r.table) for m, r in self.rates.items()},
            "last_request": self.last_request,
            "history": list(self.history),
        }


STATE = MockState()
_IDS = itertools.count(1)


# --- helpers -----------------------------------------------------------------------------------
def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _error(
    send,
    status: int,
    retry_after: str | None = None,
    message: str | None = None,
    param: str | None = None,
    code: str | None = None,
) -> None:
    etype, default_code, default_message = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"Mock fault {status}.")
    )
    error = {"message": message or default_message, "type": etype, "param": param, "code": code or default_code}
    body = _json({"error": error})
    headers = [(b"retry-after", retry_after.encode())] if retry_after is not None else []
    await _respond(send, status, body, headers)


def _completion(req: dict[str, Any], content: str, model: str) -> dict[str, Any]:
    finish = "stop"
    limit = req.get("max_completion_tokens") or req.get("max_tokens")
    if isinstance(limit, int) and limit > 0 and approx_tokens(content, model) > limit:
        content, finish = cut_to_tokens(content, limit, model), "length"
    usage_prompt = prompt_tokens(req.get("messages") or [], model)
    usage_completion = approx_tokens(content, model)
    usage = {
        "prompt_tokens": usage_prompt,
        "completion_tokens": usage_completion,
        "total_tokens": usage_prompt + usage_completion,
    }
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    calls = req.get("mock_tool_calls")
    if isinstance(calls, list) and calls and not after_tool_result(req.get("messages")):
        message["content"] = None
        message["tool_calls"] = [_mock_tool_call(index, call) for index, call in enumerate(calls)]
        finish = "tool_calls"
        if req.get("functions") and not req.get("tools"):  # legacy function calling: one call, no id
            message["function_call"] = message.pop("tool_calls")[0]["function"]
            finish = "function_call"
        usage_completion = approx_tokens(json.dumps(message.get("tool_calls") or message.get("function_call")), model)
        if isinstance(limit, int) and limit > 0:  # a real model stops at the cap, inside a call or not
            usage_completion = min(usage_completion, limit)
        usage["completion_tokens"] = usage_completion
        usage["total_tokens"] = usage_prompt + usage_completion
    response = {
        "id": f"chatcmpl-mock{next(_IDS):08d}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answered_name(model),
        "system_fingerprint": "fp_agentops_mock",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage,
    }
    return response


def _mock_tool_call(index: int, call: Any) -> dict[str, Any]:
    """One ``mock_tool_calls`` entry as OpenAI's tool call; an entry's ``"id"`` (``null``: none) wins."""
    spec = call if isinstance(call, dict) else {}
    tool_call: dict[str, Any] = {
        "id": spec.get("id", f"call_mock{index}"),
        "type": "function",
        "function": {"name": str(spec.get("name", "tool")), "arguments": json.dumps(spec.get("arguments", {}))},
    }
    if tool_call["id"] is None:
        del tool_call["id"]
    return tool_call


# --- endpoints ---------------------------------------------------------------------------------
async def _chat(scope, receive, send, raw: bytes, headers: dict[str, str], responses: bool = False) -> None:
    try:
        req = json.loads(raw or b"{}")
        if not isinstance(req, dict):
            raise ValueError("body must be a JSON object")
    except ValueError as exc:
        await _error(send, 400, message=f"Could not parse the JSON body: {exc}")
        return
    original = req if responses else None  # a Responses request, answered as the chat request it amounts to
    if original is not None:
        req = chat_of(original)
    model = str(req.get("model") or "unknown")
    fault = STATE.next_fault(model, headers.get("x-mock-fault"))
    STATE.record(model, fault, headers, original or req, scope["path"])
    if not valid_fault(fault):
        await _error(send, 400, message=f"Unknown mock fault {fault!r}.")
        return
    kind, _, arg = fault.partition(":")
    if req.get("max_tokens") is not None and is_reasoning_model(model):
        await _error(
            send,
            400,
            message="Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            param="max_tokens",
            code="unsupported_parameter",
        )
        return

    kind = await _before_answer(send, receive, kind, arg)
    if kind is None:
        return

    content = CANNED.get(kind)
    if content is None:
        try:
            content = answer_for(req, headers)
        except (TypeError, ValueError):
            await _error(send, 400, message="mock_words must be an integer.")
            return
    response = _completion(req, content, model)
    if original is not None:
        await _answer_responses(send, receive, response_of(original, response), bool(req.get("stream")), kind)
        return

    if req.get("stream"):
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        await _stream(send, receive, response, include_usage, kind, float(arg or 0) / 1000)
        return

    await _send_body(send, receive, _json(response), kind, arg)


async def _before_answer(send, receive, kind: str, arg: str) -> str | None:
    """The faults that come before any answer (delay, hang, reset, an error status): None when the request
    is answered (or dropped) already, else the kind of answer to send."""
    if kind == "delay":
        if await _sleep_unless_disconnected(receive, float(arg) / 1000):
            return None
        return "ok"
    if kind == "hang":
        if not await _sleep_unless_disconnected(receive, float(arg) / 1000 if arg else HANG_SECONDS):
            await _drop_connection(send, receive)
        return None
    if kind == "reset":
        await _drop_connection(send, receive)
        return None
    if kind.isdigit():
        await _error(send, int(kind), retry_after=arg or None)
        return None
    return kind


async def _send_body(send, receive, body: bytes, kind: str, arg: str) -> None:
    """A whole JSON answer, broken as the fault says (malformed, cut, slow_body) or not at all."""
    head = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    if kind == "malformed":
        await _respond(send, 200, body[: len(body) // 2])
    elif kind == "cut":
        await send(head)
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        await _drop_connection(send, receive)
    elif kind == "slow_body":
        await send(head)
        step = math.ceil(len(body) / SLOW_BODY_PIECES)
        pause = float(arg) / 1000 / SLOW_BODY_PIECES
        for i in range(0, len(body), step):
            if await _sleep_unless_disconnected(receive, pause):
                return
            piece = body[i : i + step]
            await send({"type": "http.response.body", "body": piece, "more_body": i + step < len(body)})
    else:
        await _respond(send, 200, body)


async def _embeddings(scope, receive, send, raw: bytes, headers: dict[str, str]) -> None:
    """``POST /v1/embeddings`` (see mock_embeddings), with the same faults as chat completions."""
    try:
        req = json.loads(raw or b"{}")
        if not isinstance(req, dict):
            raise ValueError("body must be a JSON object")
    except ValueError as exc:
        await _error(send, 400, message=f"Could not parse the JSON body: {exc}")
        return
    model = str(req.get("model") or "unknown")
    fault = STATE.next_fault(model, headers.get("x-mock-fault"))
    STATE.record(model, fault, headers, req, scope["path"])
    if not valid_fault(fault):
        await _error(send, 400, message=f"Unknown mock fault {fault!r}.")
        return
    kind, _, arg = fault.partition(":")
    kind = await _before_answer(send, receive, kind, arg)
    if kind is None:
        return
    try:
        response = embeddings_response(req, empty=kind == "empty")
    except EmbeddingsRefused as refused:
        await _error(send, 400, message=refused.message, param=refused.param)
        return
    await _send_body(send, receive, _json(response), kind, arg)


async def _answer_responses(send, receive, response: dict[str, Any], stream: bool, kind: str) -> None:
    """A Responses answer: the object, or its typed events (``malformed`` and ``cut`` break it as for chat)."""
    if not stream:
        body = _json(response)
        await _respond(send, 200, body[: len(body) // 2] if kind == "malformed" else body)
        return
    events = events_of(response)
    if kind == "malformed":
        events = [events[0], events[1][: len(events[1]) // 2] + b"\n\n"]
    headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if kind == "cut":
        await send({"type": "http.response.body", "body": b"".join(events[: len(events) // 2]), "more_body": True})
        await _drop_connection(send, receive)
        return
    await send({"type": "http.response.body", "body": b"".join(events), "more_body": False})


async def _stream(send, receive, response: dict[str, Any], include_usage: bool, kind: str, total: float) -> None:
    base = {
        "id": response["id"],
        "object": "chat.completion.chunk",
        "created": response["created"],
        "model": response["model"],
        "system_fingerprint": response["system_fingerprint"],
    }
    choice = response["choices"][0]
    content = choice["message"]["content"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        obj = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            obj["usage"] = None
        return b"data: " + _json(obj) + b"\n\n"

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    for index, call in enumerate(choice["message"].get("tool_calls") or ()):
        arguments = call["function"]["arguments"]
        head = {
            "index": index,
            **({"id": call["id"]} if "id" in call else {}),
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        events.append(chunk({"tool_calls": [head]}))
        for start in range(0, len(arguments), 8):
            piece = {"index": index, "function": {"arguments": arguments[start : start + 8]}}
            events.append(chunk({"tool_calls": [piece]}))
    legacy = choice["message"].get("function_call")
    if legacy:  # name first, then the arguments in pieces, as OpenAI streamed legacy function calls
        events.append(chunk({"function_call": {"name": legacy["name"], "arguments": ""}}))
        for start in range(0, len(legacy["arguments"]), 8):
            events.append(chunk({"function_call": {"arguments": legacy["arguments"][start : start + 8]}}))
    words = content.split(" ") if content else []
    for i in range(0, len(words), 4):
        piece = " ".join(words[i : i + 4])
        events.append(chunk({"content": piece if i + 4 >= len(words) else piece + " "}))
    events.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        events.append(b"data: " + _json({**base, "choices": [], "usage": response["usage"]}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    if kind == "malformed":
        broken = events[1] if len(events) > 2 else events[0]
        events = [events[0], broken[: len(broken) // 2] + b"\n\n", b"data: [DONE]\n\n"]

    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
            ],
        }
    )
    if kind == "cut":
        await send({"type": "http.response.body", "body": b"".join(events[: len(events) // 2]), "more_body": True})
        await _drop_connection(send, receive)
        return
    if kind == "slow_body":
        pause = total / max(1, len(events))
        for i, event in enumerate(events):
            if await _sleep_unless_disconnected(receive, pause):
                return
            await send({"type": "http.response.body", "body": event, "more_body": i < len(events) - 1})
        return
    await send({"type": "http.response.body", "body": b"".join(events), "more_body": False})


async def _models(send) -> None:
    ids = list(dict.fromkeys([*DEFAULT_MODELS, *(m for m in STATE.by_model if m != "unknown")]))
    data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "agentops-mock"} for m in ids]
    await _respond(send, 200, _json({"object": "list", "data": data}))


async def _control(path: str, raw: bytes, send) -> None:
    try:
        req = json.loads(raw or b"{}")
    except ValueError:
        await _error(send, 400, message="Invalid JSON.")
        return
    if path == "/_mock/reset":
        STATE.reset()
        await _respond(send, 200, _json({"ok": True}))
        return
    model = str(req.get("model") or "*")
    if path == "/_mock/script":
        faults = [str(f) for f in req.get("faults") or []]
        bad = [f for f in faults if not valid_fault(f)]
        if bad:
            await _error(send, 400, message=f"Unknown faults: {bad}")
            return
        STATE.scripts.setdefault(model, deque()).extend(faults)
        await _respond(send, 200, _json({"ok": True, "queued": len(STATE.scripts[model])}))
        return
    if path == "/_mock/rates":
        rates = {str(k): float(v) for k, v in (req.get("rates") or {}).items()}
        bad = [f for f in rates if not valid_fault(f)]
        if bad or any(p < 0 for p in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
            await _error(send, 400, message=f"Rates must be known faults with probabilities summing to ≤ 1: {rates}")
            return
        if rates:
            # Sorted so the same rates give the same sequence whatever order the client sent them in.
            STATE.rates[model] = _Rates(sorted(rates.items()), random.Random(req.get("seed", 0)))
        else:
            STATE.rates.pop(model, None)
        await _respond(send, 200, _json({"ok": True}))
        return
    await _error(send, 404, message=f"No control endpoint {path}.")


async def app(scope, receive, send) -> None:
    """The ASGI application."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"].rstrip("/")
    method = scope["method"]
    raw = await _read_body(receive)
    if path in ("/v1/chat/completions", "/v1/responses") and method == "POST":
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        await _chat(scope, receive, send, raw, headers, responses=path == "/v1/responses")
    elif path == "/v1/embeddings" and method == "POST":
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        await _embeddings(scope, receive, send, raw, headers)
    elif path in ("/v1/messages", "/v1/messages/count_tokens") and method == "POST":
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if path == "/v1/messages":
            await mock_anthropic.messages(scope, receive, send, raw, headers, STATE)
        else:
            await mock_anthropic.count(scope, send, raw, headers, STATE)
    elif path == "/v1/models" and method == "GET":
        await _models(send)
    elif path == "/_mock/stats" and method == "GET":
        await _respond(send, 200, _json(STATE.stats()))
    elif path.startswith("/_mock/") and method == "POST":
        await _control(path, raw, send)
    else:
        await _error(send, 404, message=f"Unknown path {method} {scope['path']}.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fault-injecting mock of the OpenAI API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    warm()  # before the first request: its timing must not include loading the tokenizer
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop=LOOP,
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level=args.log_level,
    )


if __name__ == "__main__":
    main()
