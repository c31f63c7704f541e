"""The mock's Anthropic side: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` as the Anthropic
API answers them, served by the same process as the OpenAI mock (``mock_openai.app`` routes here), with
the same fault schedule (header ``X-Mock-Fault``, scripts and rates per model).

Like the real API:
- ``max_tokens`` is required, ``messages`` must not be empty: else 400 ``invalid_request_error``;
- an undated name answers as its dated snapshot (``claude-3-5-sonnet-latest`` → ``claude-3-5-sonnet-20241022``;
  a dated name such as ``claude-3-5-sonnet-20241022`` comes back as sent);
- the answer is ``"Mock answer to: <last user text>"`` (knobs as on chat completions: ``mock_content``,
  ``mock_words``, ``mock_tool_calls`` → ``tool_use`` blocks with ``stop_reason: "tool_use"``);
  ``stop_sequences`` cut it at the first one found (``stop_reason: "stop_sequence"``, ``stop_sequence`` set),
  ``max_tokens`` cut it (``stop_reason: "max_tokens"``);
- usage counts ``system``, ``tools`` and every block (images by Anthropic's width × height / 750 rule);
  prompt caching: the prefix up to the last ``cache_control`` breakpoint is written on first sight
  (``cache_creation_input_tokens``) and read after that (``cache_read_input_tokens``), ``input_tokens`` being
  the rest;
- a stream is ``message_start``, ``content_block_start``, ``ping``, ``content_block_delta`` (``text_delta`` /
  ``input_json_delta``), ``content_block_stop``, ``message_delta`` (stop reason, output usage),
  ``message_stop``, each as ``event:`` + ``data:``;
- faults are answered in Anthropic's error shape: ``429`` ``rate_limit_error``, ``529`` ``overloaded_error``,
  ``500`` ``api_error``, ``401`` ``authentication_error`` …; ``malformed`` truncates the body (or an event),
  ``reset`` / ``cut`` / ``hang`` / ``delay`` behave as on chat completions.

The last request's headers (``anthropic-version``, ``anthropic-beta``, ``x-api-key``) are in ``/_mock/stats``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

from agentops.demo import mock_http as base
from agentops.demo.mock_usage import answered_name, count_tokens, cut_to_tokens
from agentops.runtime.tokens import image_tokens

_IDS = itertools.count(1)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
    503: "overloaded_error",
}
_CACHE: set[str] = set()  # prompt-cache prefixes seen (the mock process's lifetime, like a short TTL)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


async def error(send, status: int, message: str | None = None, retry_after: str | None = None) -> None:
    kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    body = _dumps({"type": "error", "error": {"type": kind, "message": message or f"Mock fault {status}."}})
    headers = [(b"retry-after", retry_after.encode())] if retry_after else []
    await base._respond(send, status, body, [*headers, (b"request-id", f"req_mock{next(_IDS)}".encode())])


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content or () if isinstance(b, dict) and b.get("type") == "text")


def _block_tokens(block: Any, model: str) -> int:
    if isinstance(block, str):
        return count_tokens(block, model)
    if not isinstance(block, dict):
        return 0
    kind = block.get("type")
    if kind == "text":
        return count_tokens(str(block.get("text") or ""), model)
    if kind == "image":
        source = block.get("source") or {}
        url = f"data:{source.get('media_type')};base64,{source.get('data')}" if source.get("type") == "base64" else ""
        return image_tokens({"image_url": {"url": url}}, "claude")
    if kind == "tool_result":
        inner = block.get("content")
        return 3 + (
            count_tokens(inner, model) if isinstance(inner, str) else sum(_block_tokens(b, model) for b in inner or ())
        )
    return count_tokens(json.dumps(block.get("input", block)), model)


def _pieces(req: dict[str, Any]) -> list[tuple[int, bool]]:
    """The prompt as (tokens, ends a cache breakpoint) in Anthropic's order: tools, system, messages."""
    model = str(req.get("model") or "")
    pieces = [(count_tokens(json.dumps(t), model) + 8, bool(t.get("cache_control"))) for t in req.get("tools") or ()]
    system = req.get("system")
    if isinstance(system, str):
        pieces.append((count_tokens(system, model), False))
    for block in system if isinstance(system, list) else ():
        pieces.append((_block_tokens(block, model), bool(isinstance(block, dict) and block.get("cache_control"))))
    for message in req.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else ""
        pieces.append((3, False))
        for block in [content] if isinstance(content, str) else content or ():
            pieces.append((_block_tokens(block, model), bool(isinstance(block, dict) and block.get("cache_control"))))
    return pieces


def usage_of(req: dict[str, Any], *, remember: bool = True) -> dict[str, int]:
    pieces = _pieces(req)
    total = sum(tokens for tokens, _ in pieces) + 3
    breakpoints = [index for index, (_, mark) in enumerate(pieces) if mark]
    written = read = 0
    if breakpoints:
        last = breakpoints[-1]
        prefix = sum(tokens for tokens, _ in pieces[: last + 1])
        key = hashlib.sha256(json.dumps(_prefix(req, last), sort_keys=True).encode()).hexdigest()
        if key in _CACHE:
            read = prefix
        else:
            written = prefix
            if remember:
                _CACHE.add(key)
    return {
        "input_tokens": total - written - read,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }


def _prefix(req: dict[str, Any], last: int) -> list[Any]:
    """The request's parts up to piece ``last`` (what a cache breakpoint covers), as JSON-able values."""
    parts: list[Any] = [req.get("model"), *(req.get("tools") or ())]
    system = req.get("system")
    parts += [system] if isinstance(system, str) else list(system or ())
    for message in req.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else ""
        parts.append(message.get("role") if isinstance(message, dict) else None)
        parts += [content] if isinstance(content, str) else list(content or ())
    return parts[: last + 2]


def message_for(req: dict[str, Any], headers: dict[str, str], kind: str) -> dict[str, Any]:
    model = str(req["model"])
    messages = req.get("messages") or []
    last_user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    text = base.CANNED.get(kind)
    if text is None:
        text = base.answer_for({**req, "messages": [{"role": "user", "content": last_user}]}, headers)
    stop_reason, stop_sequence = "end_turn", None
    for sequence in req.get("stop_sequences") or ():
        at = text.find(sequence)
        if at >= 0 and (stop_sequence is None or at < text.find(stop_sequence)):
            stop_reason, stop_sequence = "stop_sequence", sequence
    if stop_sequence is not None:
        text = text[: text.find(stop_sequence)]
    limit = req["max_tokens"]
    if count_tokens(text, model) > limit:
        text, stop_reason, stop_sequence = cut_to_tokens(text, limit, model), "max_tokens", None
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    calls = req.get("mock_tool_calls")
    if isinstance(calls, list) and calls:
        content = []
        for index, call in enumerate(calls):
            spec = call if isinstance(call, dict) else {}
            content.append(
                {
                    "type": "tool_use",
                    "id": spec.get("id") or f"toolu_mock{next(_IDS):06d}{index}",
                    "name": str(spec.get("name", "tool")),
                    "input": spec.get("arguments", {}),
                }
            )
        stop_reason, stop_sequence = "tool_use", None
    output = sum(count_tokens(b["text"] if b["type"] == "text" else json.dumps(b["input"]), model) for b in content)
    return {
        "id": f"msg_mock{next(_IDS):010d}",
        "type": "message",
        "role": "assistant",
        "model": answered_name(model),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {**usage_of(req), "output_tokens": min(output, limit), "service_tier": "standard"},
    }


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _dumps({"type": kind, **data}) + b"\n\n"


def stream_events(message: dict[str, Any]) -> list[bytes]:
    usage = message["usage"]
    head = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events = [_event("message_start", {"message": head})]
    for index, block in enumerate(message["content"]):
        empty = {"type": "text", "text": ""} if block["type"] == "text" else {**block, "input": {}}
        events.append(_event("content_block_start", {"index": index, "content_block": empty}))
        if index == 0:
            events.append(_event("ping", {}))
        if block["type"] == "text":
            words = block["text"].split(" ")
            for start in range(0, len(words), 4):
                piece = " ".join(words[start : start + 4]) + (" " if start + 4 < len(words) else "")
                events.append(
                    _event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": piece}})
                )
        else:
            arguments = json.dumps(block["input"])
            for start in range(0, len(arguments), 8):
                delta = {"type": "input_json_delta", "partial_json": arguments[start : start + 8]}
                events.append(_event("content_block_delta", {"index": index, "delta": delta}))
        events.append(_event("content_block_stop", {"index": index}))
    if not message["content"]:
        events.append(_event("ping", {}))
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append(_event("message_delta", {"delta": delta, "usage": {"output_tokens": usage["output_tokens"]}}))
    events.append(_event("message_stop", {}))
    return events


def _invalid(req: Any, count_only: bool) -> str | None:
    if not isinstance(req, dict):
        return "The request body must be a JSON object."
    if not isinstance(req.get("model"), str) or not req["model"]:
        return "model: Field required"
    if not count_only and (not isinstance(req.get("max_tokens"), int) or req["max_tokens"] < 1):
        return "max_tokens: Field required"
    if not isinstance(req.get("messages"), list) or not req["messages"]:
        return "messages: at least one message is required"
    return None


async def messages(scope, receive, send, raw: bytes, headers: dict[str, str], state) -> None:
    """``POST /v1/messages`` (``state``: the mock's MockState, for faults and stats)."""
    try:
        req = json.loads(raw or b"{}")
    except ValueError as exc:
        await error(send, 400, f"Could not parse the JSON body: {exc}")
        return
    problem = _invalid(req, count_only=False)
    model = str(req.get("model") or "unknown") if isinstance(req, dict) else "unknown"
    fault = state.next_fault(model, headers.get("x-mock-fault"))
    state.record(model, fault, headers, req, scope["path"])
    if problem:
        await error(send, 400, problem)
        return
    if not base.valid_fault(fault):
        await error(send, 400, f"Unknown mock fault {fault!r}.")
        return
    kind, _, arg = fault.partition(":")
    if kind == "delay":
        if await base._sleep_unless_disconnected(receive, float(arg) / 1000):
            return
        kind = "ok"
    if kind == "hang":
        if not await base._sleep_unless_disconnected(receive, float(arg) / 1000 if arg else base.HANG_SECONDS):
            await base._drop_connection(send, receive)
        return
    if kind == "reset":
        await base._drop_connection(send, receive)
        return
    if kind.isdigit():
        await error(send, int(kind), retry_after=arg or None)
        return
    try:
        message = message_for(req, headers, kind)
    except (TypeError, ValueError):
        await error(send, 400, "mock_words must be an integer.")
        return
    if req.get("stream"):
        events = stream_events(message)
        if kind == "malformed":
            events = [events[0], events[1][: len(events[1]) // 2] + b"\n\n"]
        start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
        await send(start)
        if kind == "cut":
            await send({"type": "http.response.body", "body": b"".join(events[: len(events) // 2]), "more_body": True})
            await base._drop_connection(send, receive)
            return
        await send({"type": "http.response.body", "body": b"".join(events), "more_body": False})
        return
    body = _dumps(message)
    if kind == "malformed":
        body = body[: len(body) // 2]
    if kind == "cut":
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        await base._drop_connection(send, receive)
        return
    await base._respond(send, 200, body, [(b"request-id", f"req_mock{next(_IDS)}".encode())])


async def count(scope, send, raw: bytes, headers: dict[str, str], state) -> None:
    """``POST /v1/messages/count_tokens``: what ``usage_of`` would charge, caching not applied."""
    try:
        req = json.loads(raw or b"{}")
    except ValueError as exc:
        await error(send, 400, f"Could not parse the JSON body: {exc}")
        return
    problem = _invalid(req, count_only=True)
    state.record(str(req.get("model") if isinstance(req, dict) else "unknown"), "ok", headers, req, scope["path"])
    if problem:
        await error(send, 400, problem)
        return
    usage = usage_of(req, remember=False)
    total = usage["input_tokens"] + usage["cache_creation_input_tokens"] + usage["cache_read_input_tokens"]
    await base._respond(send, 200, _dumps({"input_tokens": total}))
