"""A provider that speaks OpenAI's Responses API natively (``POST /responses``), seen through the guard's
chat-completions contract.

The gateway's ``/v1/responses`` translates every request to a chat completion for the guard (reservation,
cache, retries, fallback, tool review all read that shape) and keeps the client's own Responses body beside it
in ``LLMRequest.extra["native"]``. A provider marked as speaking Responses posts that body — with the model
of the chain's target and the reserved output cap — to its own ``/responses`` instead; its answer comes back
here as a chat completion (text, tool calls, usage) so the guard can settle and review it, with the upstream's
whole Responses object kept under ``"native_response"`` for the gateway to pass on. A streamed answer's typed
events become chat-completion chunks the same way (the gateway turns them back into Responses events).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

NATIVE_KEY = "native"  # LLMRequest.extra[NATIVE_KEY]: the client's Responses body (never sent as a chat field)
FINISH_OF_STATUS = {"completed": "stop", "incomplete": "length", "failed": "stop"}


def native_body(native: Mapping[str, Any], model: str, max_tokens: int | None, stream: bool) -> dict[str, Any]:
    """The body posted to the provider's ``/responses``: the client's, for this target's model, capped at the
    reserved output tokens, never stored upstream (agentops keeps the conversation)."""
    body = {**native, "model": model, "store": False, "stream": stream}
    if max_tokens is not None:
        body["max_output_tokens"] = max_tokens
    body.pop("previous_response_id", None)
    return body


def message_of(output: Any) -> tuple[dict[str, Any], bool]:
    """The assistant chat message a Responses ``output`` list amounts to, and whether it was refused."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    refused = False
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "message":
            for part in item.get("content") or ():
                if isinstance(part, Mapping) and part.get("type") == "output_text":
                    texts.append(str(part.get("text") or ""))
                elif isinstance(part, Mapping) and part.get("type") == "refusal":
                    texts.append(str(part.get("refusal") or ""))
                    refused = True
        elif item.get("type") == "function_call":
            calls.append(
                {
                    "id": item.get("call_id") or item.get("id"),
                    "type": "function",
                    "function": {"name": item.get("name") or "", "arguments": item.get("arguments") or ""},
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message, refused


def usage_of(usage: Any) -> dict[str, Any]:
    """Responses usage (``input_tokens``/``output_tokens``) as chat-completions usage."""
    usage = usage if isinstance(usage, Mapping) else {}
    details = usage.get("input_tokens_details") or {}
    prompt = int(usage.get("input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": int(details.get("cached_tokens") or 0)},
    }


def finish_of(response: Mapping[str, Any], message: Mapping[str, Any]) -> str:
    if message.get("tool_calls"):
        return "tool_calls"
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "content_filter" if reason == "content_filter" else "length"
    return FINISH_OF_STATUS.get(str(response.get("status")), "stop")


def chat_completion_of(response: Mapping[str, Any], requested_model: str) -> dict[str, Any]:
    """A Responses object as a ``chat.completion`` body (the upstream's object kept under ``native_response``)."""
    message, _ = message_of(response.get("output"))
    return {
        "id": str(response.get("id") or ""),
        "object": "chat.completion",
        "created": int(response.get("created_at") or 0),
        "model": response.get("model") or requested_model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_of(response, message)}],
        "usage": usage_of(response.get("usage")),
        "native_response": dict(response),
    }


def chat_chunks_of(events: Iterator[dict[str, Any]], requested_model: str) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """A Responses event stream as chat-completion chunks ``(payload, chunk)``: text deltas as content, each
    function call as a tool-call delta (id and name first, then its argument deltas), the final status as
    the finish chunk and the usage as the usage chunk. An ``error`` / ``response.failed`` event becomes an
    error chunk (the caller classifies it)."""
    base: dict[str, Any] = {"id": "", "object": "chat.completion.chunk", "created": 0, "model": requested_model}
    calls: dict[int, int] = {}  # output_index -> tool call index

    def chunk(delta: dict[str, Any], finish: str | None = None) -> tuple[bytes, dict[str, Any]]:
        value = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return json.dumps(value, separators=(",", ":")).encode(), value

    for event in events:
        kind = event.get("type")
        if kind == "response.created":
            response = event.get("response") or {}
            base["id"] = str(response.get("id") or "")
            base["created"] = int(response.get("created_at") or 0)
            base["model"] = response.get("model") or requested_model
            yield chunk({"role": "assistant", "content": ""})
        elif kind == "response.output_text.delta":
            yield chunk({"content": str(event.get("delta") or "")})
        elif kind == "response.output_item.added" and (event.get("item") or {}).get("type") == "function_call":
            item = event["item"]
            index = calls.setdefault(int(event.get("output_index") or 0), len(calls))
            head = {"index": index, "id": item.get("call_id"), "type": "function"}
            yield chunk({"tool_calls": [{**head, "function": {"name": item.get("name"), "arguments": ""}}]})
        elif kind == "response.function_call_arguments.delta":
            index = calls.get(int(event.get("output_index") or 0))
            if index is not None:
                yield chunk(
                    {"tool_calls": [{"index": index, "function": {"arguments": str(event.get("delta") or "")}}]}
                )
        elif kind in ("response.completed", "response.incomplete"):
            response = event.get("response") or {}
            message = {"tool_calls": [1]} if calls else {}
            yield chunk({}, finish_of(response, message))
            usage = {**base, "choices": [], "usage": usage_of(response.get("usage"))}
            yield json.dumps(usage, separators=(",", ":")).encode(), usage
            return
        elif kind in ("error", "response.failed"):
            error = event.get("error") or (event.get("response") or {}).get("error") or event
            message = error.get("message") if isinstance(error, Mapping) else None
            failure = {"error": {"message": str(message or "the upstream's response failed"), "type": "server_error"}}
            yield json.dumps(failure).encode(), failure
            return
