"""The mock's ``POST /v1/responses``: OpenAI's Responses API, answered like its chat completions.

A Responses request is read as the chat request it amounts to (``instructions`` a system message, ``input``
messages; ``function_call_output`` items tool messages; ``max_output_tokens`` the cap), answered by the same
code as ``/v1/chat/completions`` (same faults, knobs — ``mock_content``, ``mock_words``, ``mock_tool_calls``
— and token counts), and shaped as a ``response`` object: a ``message`` item with ``output_text``, one
``function_call`` item per call, ``usage`` with ``input_tokens`` / ``output_tokens``; ``status`` is
``incomplete`` (reason ``max_output_tokens``) for an answer cut at the cap. ``"stream": true`` answers
Responses' typed events (``event:`` + ``data:`` lines, numbered by ``sequence_number``), ending with
``response.completed`` — no ``[DONE]``, like OpenAI.
"""

from __future__ import annotations

import json
from typing import Any


def _text(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for part in content if isinstance(content, list) else ():
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif isinstance(part, dict) and part.get("type") == "input_image":
            parts.append(
                {"type": "image_url", "image_url": {"url": part.get("image_url"), "detail": part.get("detail")}}
            )
    return parts


def chat_of(req: dict[str, Any]) -> dict[str, Any]:
    """The chat request a Responses request amounts to (the mock's knobs kept)."""
    messages: list[dict[str, Any]] = []
    if isinstance(req.get("instructions"), str):
        messages.append({"role": "system", "content": req["instructions"]})
    value = req.get("input")
    items = [{"role": "user", "content": value}] if isinstance(value, str) else value if isinstance(value, list) else []
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type") or "message"
        if kind == "message":
            messages.append({"role": item.get("role") or "user", "content": _text(item.get("content"))})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function", "function": {"name": item.get("name")}}
            messages.append({"role": "assistant", "content": item.get("arguments") or "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "content": output if isinstance(output, str) else _text(output)})
    chat = {key: value for key, value in req.items() if key.startswith("mock_") or key in ("model", "stream")}
    chat["messages"] = messages
    if isinstance(req.get("max_output_tokens"), int):
        chat["max_completion_tokens"] = req["max_output_tokens"]
    if req.get("tools"):
        chat["tools"] = req["tools"]
    return chat


def response_of(req: dict[str, Any], completion: dict[str, Any]) -> dict[str, Any]:
    """A chat completion (the mock's answer) as a Responses ``response`` object."""
    number = completion["id"].removeprefix("chatcmpl-mock")
    choice = completion["choices"][0]
    message = choice["message"]
    output: list[dict[str, Any]] = []
    if message.get("content"):
        part = {"type": "output_text", "text": message["content"], "annotations": [], "logprobs": []}
        output.append(
            {
                "id": f"msg_mock{number}",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
        )
    for index, call in enumerate(message.get("tool_calls") or ()):
        output.append(
            {
                "id": f"fc_mock{number}_{index}",
                "type": "function_call",
                "status": "completed",
                "call_id": call.get("id") or f"call_mock{index}",
                "name": call["function"]["name"],
                "arguments": call["function"]["arguments"],
            }
        )
    usage = completion["usage"]
    cut = choice["finish_reason"] == "length"
    return {
        "id": f"resp_mock{number}",
        "object": "response",
        "created_at": completion["created"],
        "status": "incomplete" if cut else "completed",
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "model": completion["model"],
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": req.get("previous_response_id"),
        "store": req.get("store", True),
        "temperature": req.get("temperature"),
        "text": {"format": {"type": "text"}},
        "tool_choice": req.get("tool_choice", "auto"),
        "tools": req.get("tools") or [],
        "top_p": req.get("top_p"),
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["total_tokens"],
        },
        "metadata": req.get("metadata") or {},
    }


def events_of(response: dict[str, Any]) -> list[bytes]:
    """A whole response as the typed events OpenAI streams for it."""
    events: list[bytes] = []

    def event(kind: str, **fields: Any) -> None:
        payload = {"type": kind, **fields, "sequence_number": len(events)}
        events.append(f"event: {kind}\ndata: ".encode() + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")

    opening = {**response, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    event("response.created", response=opening)
    event("response.in_progress", response=opening)
    for index, item in enumerate(response["output"]):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            event(
                "response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []}
            )
            common = {"item_id": item["id"], "output_index": index, "content_index": 0}
            event("response.content_part.added", **common, part={**item["content"][0], "text": ""})
            words = text.split(" ")
            for start in range(0, len(words), 4):
                piece = " ".join(words[start : start + 4])
                event("response.output_text.delta", **common, delta=piece if start + 4 >= len(words) else piece + " ")
            event("response.output_text.done", **common, text=text, logprobs=[])
            event("response.content_part.done", **common, part=item["content"][0])
        else:
            event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            arguments = item["arguments"]
            for start in range(0, len(arguments), 8):
                piece = arguments[start : start + 8]
                event("response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=piece)
            event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=arguments,
            )
        event("response.output_item.done", output_index=index, item=item)
    event("response.completed" if response["status"] == "completed" else "response.incomplete", response=response)
    return events
