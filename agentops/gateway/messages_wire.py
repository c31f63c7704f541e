"""Anthropic's Messages wire format on the gateway: request validation, its translation into the guard's
chat request, answers translated back into messages, and errors in Anthropic's shape.

Pure functions over dicts and bytes (no Django). ``/v1/messages`` runs every call through the same guard as
``/v1/chat/completions`` (``handling.guarded_call``): a Messages request is validated here the way the
Anthropic API validates it (so the official ``anthropic`` SDK gets ``BadRequestError`` with a message naming
the field), then translated into a ``ChatRequest`` — ``system`` into a system message, ``tool_result``
blocks into tool messages, ``tool_use`` blocks into tool calls, images into ``image_url`` parts (the token
bound of the reservation counts them by Anthropic's rule), ``tools`` into functions, ``stop_sequences``
into ``stop``. The client's own body travels along (``NativeRequest``): a native Anthropic provider sends
it as it came; any other provider gets the translation. Answers come back as chat completions and are
translated into a message here — unless the native provider answered, whose message is passed on as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentops.gateway.wire import ChatRequest, WireError, dumps
from agentops.lib import jsonbody
from agentops.runtime.providers.anthropic_native import (
    FINISH_TO_STOP,
    NATIVE,
    PASSED_HEADERS,
    NativeRequest,
)

MAX_OUTPUT_TOKENS = 1_000_000
MAX_MODEL_CHARS = 256
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
# Fields that change the answer but have no chat-completions counterpart: kept for a native upstream,
# and a request naming them is not answered from the cache (its key is built from the translation).
NATIVE_ONLY = ("top_k", "thinking", "container", "mcp_servers", "service_tier", "context_management")
# Every field the Messages API defines: translated, or kept for a native upstream only. Any other field (a
# provider's extension) goes to a chat-completions upstream unchanged, as on /v1/chat/completions.
MESSAGES_FIELDS = frozenset(
    {"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature", "top_p"}
    | {"tools", "tool_choice", "output_format", "output_config", "inference_geo", *NATIVE_ONLY}
)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_payload(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def render_error(error: WireError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A gateway error (status, its retry headers kept) in Anthropic's shape: the SDK raises its own class."""
    return error.status, error.headers()[1:], dumps(error_payload(error.status, error.message))


def bad_request(message: str) -> WireError:
    return WireError(400, message)


@dataclass
class MessagesRequest:
    """A validated Messages request: the client's ``body``, the guard's ``chat`` request translated from
    it, and the ``native`` request a native Anthropic provider sends as it came."""

    body: dict[str, Any]
    chat: ChatRequest
    native: NativeRequest

    @property
    def model(self) -> str:
        return self.chat.model

    @property
    def stream(self) -> bool:
        return self.chat.stream

    @property
    def native_only(self) -> bool:
        return any(self.body.get(name) is not None for name in NATIVE_ONLY)


def parse(raw: bytes, headers: Mapping[str, str], *, count_only: bool = False) -> MessagesRequest:
    """The request, or a ``WireError`` (400) naming the field like Anthropic does (``count_only``: a
    ``count_tokens`` body, which has no ``max_tokens`` and no ``stream``)."""
    try:
        body = jsonbody.loads(raw)
    except jsonbody.BodyProblem as problem:
        raise bad_request(f"{problem.where}: {problem.message}" if problem.where else problem.message) from None
    except (ValueError, UnicodeDecodeError):
        raise bad_request("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("model: Field required")
    if len(model) > MAX_MODEL_CHARS:
        raise bad_request(f"model: String should have at most {MAX_MODEL_CHARS} characters")
    max_tokens = body.get("max_tokens")
    if count_only:
        max_tokens = None
    elif max_tokens is None:
        raise bad_request("max_tokens: Field required")
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_OUTPUT_TOKENS:
        raise bad_request(f"max_tokens: Input should be an integer between 1 and {MAX_OUTPUT_TOKENS}")
    temperature = _number(body, "temperature", 0.0, 1.0)
    _number(body, "top_p", 0.0, 1.0)
    top_k = body.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise bad_request("top_k: Input should be a non-negative integer")
    stream = body.get("stream", False) if not count_only else False
    if not isinstance(stream, bool):
        raise bad_request("stream: Input should be a valid boolean")
    stop = body.get("stop_sequences")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
        raise bad_request("stop_sequences: Input should be a list of non-empty strings")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad_request("metadata: Input should be an object")
    user = (metadata or {}).get("user_id")
    if user is not None and not isinstance(user, str):
        raise bad_request("metadata.user_id: Input should be a valid string")

    messages = [*_system(body.get("system")), *_turns(body.get("messages"))]
    upstream: dict[str, Any] = {key: value for key, value in body.items() if key not in MESSAGES_FIELDS}
    tools = _tools(body.get("tools"))
    if tools:
        upstream["tools"] = tools
    upstream.update(_tool_choice(body.get("tool_choice")))
    if stop:
        upstream["stop"] = stop
    if body.get("top_p") is not None:
        upstream["top_p"] = body["top_p"]
    if user:
        upstream["user"] = user
    chat = ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=temperature,
        stream=stream,
        upstream=upstream,
        endpoint="/v1/messages",
    )
    passed = {name: headers[name] for name in PASSED_HEADERS if headers.get(name)}
    native = NativeRequest({key: value for key, value in body.items() if key not in ("model", "stream")}, passed)
    return MessagesRequest(body=body, chat=chat, native=native)


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(f"{name}: Input should be a valid number")
    if not low <= value <= high:
        raise bad_request(f"{name}: Input should be between {low:g} and {high:g}")
    return float(value)


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list):
        raise bad_request("system: Input should be a string or a list of text blocks")
    texts = []
    for index, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise bad_request(f"system.{index}: Input should be a text block")
        texts.append(block["text"])
    return [{"role": "system", "content": "\n\n".join(texts)}] if texts else []


def _turns(turns: Any) -> list[dict[str, Any]]:
    if not isinstance(turns, list) or not turns:
        raise bad_request("messages: at least one message is required")
    out: list[dict[str, Any]] = []
    for index, turn in enumerate(turns):
        where = f"messages.{index}"
        if not isinstance(turn, dict):
            raise bad_request(f"{where}: Input should be an object")
        role = turn.get("role")
        if role not in ("user", "assistant"):
            raise bad_request(f"{where}.role: Input should be 'user' or 'assistant'")
        content = turn.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise bad_request(f"{where}.content: Input should be a string or a list of content blocks")
        out += _assistant(content, where) if role == "assistant" else _user(content, where)
    return out


def _block(block: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(block, dict) or block.get("type") not in allowed:
        kind = block.get("type") if isinstance(block, dict) else None
        raise bad_request(
            f"{where}: blocks of type {kind!r} are not supported here; expected one of {', '.join(allowed)}"
        )
    if block["type"] == "text" and not isinstance(block.get("text"), str):
        raise bad_request(f"{where}.text: Field required")
    return block


def _user(content: list, where: str) -> list[dict[str, Any]]:
    """A user turn: its tool results as tool messages (first, answering the calls before them), the rest as
    one user message of text and image parts."""
    results, parts = [], []
    for index, raw in enumerate(content):
        at = f"{where}.content.{index}"
        block = _block(raw, at, ("text", "image", "tool_result"))
        if block["type"] == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif block["type"] == "image":
            parts.append(image_part(block, at))
        else:
            call_id = block.get("tool_use_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request(f"{at}.tool_use_id: Field required")
            inner = block.get("content", "")
            text, images = _tool_result_content(inner, at)
            if block.get("is_error") is True:
                text = f"Error: {text}" if text else "Error"
            results.append({"role": "tool", "tool_call_id": call_id, "content": text})
            parts += images
    if parts:
        results.append({"role": "user", "content": parts})
    return results


def _tool_result_content(inner: Any, where: str) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(inner, str):
        return inner, []
    if not isinstance(inner, list):
        raise bad_request(f"{where}.content: Input should be a string or a list of blocks")
    texts, images = [], []
    for index, raw in enumerate(inner):
        block = _block(raw, f"{where}.content.{index}", ("text", "image"))
        if block["type"] == "text":
            texts.append(block["text"])
        else:
            images.append(image_part(block, f"{where}.content.{index}"))
    return "\n".join(texts), images


def image_part(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An image block as an ``image_url`` part: a base64 source as a data URL, a url source as the link."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise bad_request(f"{where}.source: Field required")
    if source.get("type") == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if media_type not in IMAGE_TYPES:
            raise bad_request(f"{where}.source.media_type: Input should be one of {', '.join(IMAGE_TYPES)}")
        if not isinstance(data, str) or not data:
            raise bad_request(f"{where}.source.data: Field required")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if source.get("type") == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise bad_request(f"{where}.source.url: Input should be an http(s) URL")
        return {"type": "image_url", "image_url": {"url": url}}
    raise bad_request(f"{where}.source.type: Input should be 'base64' or 'url'")


def _assistant(content: list, where: str) -> list[dict[str, Any]]:
    texts, calls = [], []
    for index, raw in enumerate(content):
        at = f"{where}.content.{index}"
        block = _block(raw, at, ("text", "tool_use", "thinking", "redacted_thinking"))
        if block["type"] == "text":
            texts.append(block["text"])
        elif block["type"] == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise bad_request(f"{at}: a tool_use block needs an id and a name")
            if not isinstance(block.get("input", {}), dict):
                raise bad_request(f"{at}.input: Input should be an object")
            arguments = dumps(block.get("input") or {}).decode()
            calls.append(
                {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return [message] if texts or calls else []


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("tools: Input should be a list")
    out = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise bad_request(f"tools.{index}.name: Field required")
        if tool.get("type") not in (None, "custom"):
            raise bad_request(
                f"tools.{index}.type: server tools ({tool['type']!r}) are not supported by this gateway; "
                "define custom tools with a name and an input_schema"
            )
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise bad_request(f"tools.{index}.input_schema: Field required")
        function: dict[str, Any] = {"name": tool["name"], "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice is None:
        return {}
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise bad_request("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    kind = choice["type"]
    if kind == "tool":
        if not isinstance(choice.get("name"), str):
            raise bad_request("tool_choice.name: Field required")
        out: dict[str, Any] = {"tool_choice": {"type": "function", "function": {"name": choice["name"]}}}
    else:
        out = {"tool_choice": {"auto": "auto", "any": "required", "none": "none"}[kind]}
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    return out


# --- answers ---------------------------------------------------------------------------------------------


def anthropic_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """OpenAI's usage as Anthropic's: ``input_tokens`` without the cache reads and writes."""
    usage = usage or {}
    details = usage.get("prompt_tokens_details") or {}
    read = int(details.get("cached_tokens") or 0) if isinstance(details, Mapping) else 0
    written = int(usage.get("cache_creation_input_tokens") or 0)
    return {
        "input_tokens": max(int(usage.get("prompt_tokens") or 0) - read - written, 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }


def message_of(body: Mapping[str, Any], message_id: str) -> dict[str, Any]:
    """The Anthropic message for a ``chat.completion`` body: the native provider's own message when it
    answered, else a translation (text block, ``tool_use`` blocks, stop reason, usage)."""
    native = body.get(NATIVE)
    if isinstance(native, dict):
        return native
    choice = body["choices"][0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    content += [tool_use_block(call) for call in message.get("tool_calls") or ()]
    if isinstance(message.get("function_call"), Mapping):
        content.append(tool_use_block({"id": None, "function": message["function_call"]}))
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": FINISH_TO_STOP.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(body.get("usage")),
    }


def tool_use_block(call: Mapping[str, Any], position: int = 0) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    try:
        parsed = jsonbody.loads(arguments) if isinstance(arguments, str | bytes) and arguments else arguments or {}
    except (ValueError, jsonbody.BodyProblem):
        parsed = {"_raw": arguments}
    return {
        "type": "tool_use",
        "id": call.get("id") or f"toolu_gw{position}",
        "name": function.get("name") or "tool",
        "input": parsed if isinstance(parsed, dict) else {"_raw": parsed},
    }


def calls_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """An Anthropic message as the assistant message tool review reads (its ``tool_use`` blocks as tool
    calls, in order: a call's position is its index among them)."""
    text = "".join(str(b.get("text") or "") for b in message.get("content") or () if b.get("type") == "text")
    calls = [
        {
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": dumps(block.get("input") or {}).decode()},
        }
        for block in message.get("content") or ()
        if block.get("type") == "tool_use"
    ]
    out: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        out["tool_calls"] = calls
    return out


def rewritten(message: Mapping[str, Any], reviewed: Mapping[str, Any], finish: str | None) -> dict[str, Any]:
    """``message`` after review: other blocks (thinking …) first, then the reviewed text, then the calls
    left (``reviewed`` is ``calls_message`` rewritten by the decisions); ``end_turn`` when none is left."""
    content = [b for b in message.get("content") or () if b.get("type") not in ("text", "tool_use")]
    if reviewed.get("content"):
        content.append({"type": "text", "text": reviewed["content"]})
    content += [tool_use_block(call, i) for i, call in enumerate(reviewed.get("tool_calls") or ())]
    out = {**message, "content": content}
    if finish is not None:
        out["stop_reason"], out["stop_sequence"] = "end_turn", None
    return out
