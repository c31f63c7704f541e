"""Anthropic's stream events on the gateway, in Anthropic's order and shapes:

    message_start → (content_block_start → [ping after the first] → content_block_delta… →
    content_block_stop)… → message_delta (stop reason, usage) → message_stop

each as ``event: <type>`` + ``data: {…}``; a failure after the start is ``event: error``. Two sources:
``events_of`` turns a whole message into its events (an answer that was not streamed upstream: simulated,
rules, cache, or a held answer once decided); ``ChunkEvents`` turns the guard's OpenAI chunks into events
as they arrive — text deltas flow at once, and ``tool_use`` blocks are kept back when tool review applies,
until the stream has ended and its calls are reviewed (``tail``). Pure functions, no Django.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agentops.gateway.messages_wire import anthropic_usage, error_type, tool_use_block
from agentops.gateway.wire import dumps
from agentops.runtime.providers.anthropic_native import FINISH_TO_STOP, START, STOP

TEXT_PIECE = 64
JSON_PIECE = 32


def event(kind: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + dumps({"type": kind, **data}) + b"\n\n"


PING = event("ping", {})


def error_event(status: int, message: str) -> bytes:
    return event("error", {"error": {"type": error_type(status), "message": message}})


def _start(message: Mapping[str, Any], usage: Mapping[str, Any]) -> bytes:
    head = {
        "id": message.get("id"),
        "type": "message",
        "role": "assistant",
        "model": message.get("model"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": dict(usage),
    }
    return event("message_start", {"message": head})


def block_events(index: int, block: Mapping[str, Any]) -> list[bytes]:
    """One content block whole: its start (empty), its deltas in pieces, its stop."""
    kind = block.get("type")
    if kind == "text":
        text = str(block.get("text") or "")
        out = [event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})]
        for start in range(0, len(text), TEXT_PIECE):
            piece = {"type": "text_delta", "text": text[start : start + TEXT_PIECE]}
            out.append(event("content_block_delta", {"index": index, "delta": piece}))
    elif kind == "tool_use":
        head = {"type": "tool_use", "id": block.get("id"), "name": block.get("name"), "input": {}}
        out = [event("content_block_start", {"index": index, "content_block": head})]
        arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
        for start in range(0, len(arguments), JSON_PIECE):
            piece = {"type": "input_json_delta", "partial_json": arguments[start : start + JSON_PIECE]}
            out.append(event("content_block_delta", {"index": index, "delta": piece}))
    else:  # thinking and other blocks: whole in their start
        out = [event("content_block_start", {"index": index, "content_block": dict(block)})]
    out.append(event("content_block_stop", {"index": index}))
    return out


def _end(stop_reason: str | None, stop_sequence: str | None, usage: Mapping[str, Any]) -> list[bytes]:
    delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
    return [event("message_delta", {"delta": delta, "usage": dict(usage)}), event("message_stop", {})]


def events_of(message: Mapping[str, Any]) -> list[bytes]:
    """A whole message as the events Anthropic would have streamed for it."""
    usage = dict(message.get("usage") or {})
    events = [_start(message, {**usage, "output_tokens": 1 if usage.get("output_tokens") else 0})]
    for index, block in enumerate(message.get("content") or ()):
        block_start, *rest = block_events(index, block)
        events += [block_start, PING, *rest] if index == 0 else [block_start, *rest]
    if not message.get("content"):
        events.append(PING)
    return events + _end(message.get("stop_reason"), message.get("stop_sequence"), usage)


class ChunkEvents:
    """The guard's OpenAI chunks of one answer as Anthropic events. ``feed(chunk)`` returns the events to
    send now; ``hold_calls`` keeps ``tool_use`` blocks back (``calls``), to be sent by ``tail`` once the
    stream has ended and the calls are reviewed."""

    def __init__(self, message_id: str, model: str) -> None:
        self.message = {"id": message_id, "model": model}
        self.started = False
        self.index = -1  # the open content block's index (-1: none yet)
        self.open: str | None = None  # "text" | "tool_use" | None
        self.pinged = False
        self.hold_calls = False
        self.text = ""
        self.calls: dict[int, dict[str, Any]] = {}  # by call index: {"id", "function": {"name", "arguments"}}
        self.live_calls: dict[int, int] = {}  # call index → its block index (calls sent as they came)
        self.finish: str | None = None
        self.stop: dict[str, Any] = {}
        self.usage: dict[str, Any] | None = None

    @staticmethod
    def carries_call(chunk: Mapping[str, Any]) -> bool:
        choices = chunk.get("choices") or ()
        delta = (choices[0].get("delta") or {}) if choices and isinstance(choices[0], Mapping) else {}
        return bool(delta.get("tool_calls"))

    def _begin(self, chunk: Mapping[str, Any]) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        start = chunk.get(START) if isinstance(chunk.get(START), Mapping) else {}
        self.message["id"] = start.get("id") or self.message["id"]
        self.message["model"] = chunk.get("model") or self.message["model"]
        usage = start.get("usage") or {"input_tokens": 0, "output_tokens": 0}
        return [_start(self.message, usage)]

    def _open(self, kind: str, block: Mapping[str, Any]) -> list[bytes]:
        out = self._close()
        self.index += 1
        self.open = kind
        out.append(event("content_block_start", {"index": self.index, "content_block": dict(block)}))
        if not self.pinged:
            self.pinged = True
            out.append(PING)
        return out

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [event("content_block_stop", {"index": self.index})]

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]:
        out = self._begin(chunk)
        if chunk.get("usage"):
            self.usage = dict(chunk["usage"])
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.text += delta["content"]
                if self.open != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                piece = {"type": "text_delta", "text": delta["content"]}
                out.append(event("content_block_delta", {"index": self.index, "delta": piece}))
            for part in delta.get("tool_calls") or ():
                out += self._call(part)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                self.stop = dict(chunk.get(STOP) or {})
        return out

    def _call(self, part: Mapping[str, Any]) -> list[bytes]:
        position = int(part.get("index") or 0)
        call = self.calls.setdefault(position, {"id": None, "type": "function", "function": {"arguments": ""}})
        function = part.get("function") or {}
        call["id"] = call["id"] or part.get("id")
        if function.get("name"):
            call["function"]["name"] = function["name"]
        pieces = function.get("arguments") or ""
        call["function"]["arguments"] += pieces
        if self.hold_calls:
            return []
        out = []
        if position not in self.live_calls:
            head = {"type": "tool_use", "id": call["id"] or f"toolu_gw{position}", "name": function.get("name")}
            out += self._open("tool_use", {**head, "input": {}})
            self.live_calls[position] = self.index
        if pieces:
            delta = {"type": "input_json_delta", "partial_json": pieces}
            out.append(event("content_block_delta", {"index": self.live_calls[position], "delta": delta}))
        return out

    def held_message(self) -> dict[str, Any]:
        """The answer's text and calls as the assistant message tool review reads."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.calls:
            message["tool_calls"] = [self.calls[index] for index in sorted(self.calls)]
        return message

    def tail(self, reviewed: Mapping[str, Any] | None, finish: str | None, usage: Mapping[str, Any]) -> list[bytes]:
        """The events that end the answer: the text the decisions added, the calls kept back (as
        ``reviewed`` left them, else as they came), the stop reason and the usage (Anthropic's shape)."""
        out = self._begin({})
        if self.hold_calls:
            message = reviewed if reviewed is not None else self.held_message()
            added = (message.get("content") or "")[len(self.text) :]
            if added:
                if self.open != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out.append(
                    event("content_block_delta", {"index": self.index, "delta": {"type": "text_delta", "text": added}})
                )
            out += self._close()
            for position, call in enumerate(message.get("tool_calls") or ()):
                self.index += 1
                out += block_events(self.index, tool_use_block(call, position))
        out += self._close()
        if not self.pinged:
            out.append(PING)
        if finish is not None:  # the review left no call
            stop_reason, stop_sequence = "end_turn", None
        else:
            stop_reason = self.stop.get("stop_reason") or FINISH_TO_STOP.get(str(self.finish), "end_turn")
            stop_sequence = self.stop.get("stop_sequence")
        return out + _end(stop_reason, stop_sequence, anthropic_usage(usage))
