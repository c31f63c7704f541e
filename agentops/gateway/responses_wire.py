"""OpenAI's Responses API wire format (``/v1/responses``), translated to and from chat completions.

Pure functions over dicts (no Django). The guard pipeline speaks chat completions, so a Responses request
becomes the ``ChatRequest`` the chat path answers (``chat_request``) — as LiteLLM's and Portkey's
translations do: ``instructions`` a system message first, ``input`` items messages (``function_call``
items the assistant's tool calls, ``function_call_output`` items tool messages), flat function tools nested
as chat tools, ``text.format`` as ``response_format``, ``max_output_tokens`` as the reserved cap — and the
answer, a ``chat.completion`` body after tool review, becomes a ``response`` object (``response_object``).
A provider that speaks Responses gets the client's body itself (``ChatRequest.native``, see
agentops/runtime/providers/responses_native.py); its own output items are passed on when review changed
nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentops.gateway.wire import (
    MAX_MODEL_CHARS,
    MAX_OUTPUT_TOKENS,
    ChatRequest,
    WireError,
    _optional_int,
    _optional_number,
    bad_request,
)
from agentops.lib import jsonbody
from agentops.runtime.providers.base import content_text
from agentops.runtime.providers.responses_native import message_of

ROLES = frozenset({"user", "system", "developer", "assistant"})
TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
# Responses fields read (and translated) here, or with no chat-completions counterpart (dropped); every other
# field goes to the upstream's chat completion as it came, as on /v1/chat/completions.
RESPONSES_FIELDS = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "stream", "stream_options", "store",
        "previous_response_id", "metadata", "max_output_tokens", "temperature", "text", "reasoning", "include",
        "truncation", "background", "conversation", "prompt", "max_tool_calls", "top_logprobs",
    }
)  # fmt: skip
UNSUPPORTED = {
    "background": "background responses",
    "conversation": "conversations (send previous_response_id, or the items themselves)",
    "prompt": "prompt templates",
}
MAX_METADATA_KEYS = 16


@dataclass
class ResponsesRequest:
    """A validated ``/v1/responses`` body: ``items`` is this turn's input as Responses items, ``body`` the
    client's body as it came (echoed in the answer, sent to a provider that speaks Responses)."""

    body: dict[str, Any]
    model: str
    items: list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    max_output_tokens: int | None = None
    temperature: float | None = None


def parse_responses_request(raw: bytes) -> ResponsesRequest:
    """The request, or a ``WireError`` (400) naming the offending parameter like OpenAI does."""
    try:
        body = jsonbody.loads(raw)
    except jsonbody.BodyProblem as problem:
        raise bad_request(problem.message, param=problem.where or None) from None
    except (ValueError, UnicodeDecodeError):
        raise bad_request(
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload."
        ) from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if len(model) > MAX_MODEL_CHARS:
        raise bad_request(f"model must be at most {MAX_MODEL_CHARS} characters", param="model")
    for name, what in UNSUPPORTED.items():
        if body.get(name) not in (None, False):
            raise bad_request(f"This gateway does not support {what} on /v1/responses.", param=name)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise bad_request(f"{instructions!r} is not of type 'string' - 'instructions'", param="instructions")
    stream = _optional_bool(body, "stream", False)
    store = _optional_bool(body, "store", True)
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous.strip() or len(previous) > 64):
        raise bad_request("previous_response_id must be a response id (resp_…).", param="previous_response_id")
    return ResponsesRequest(
        body=body,
        model=model,
        items=input_items(body.get("input")),
        instructions=instructions or None,
        tools=_tools(body.get("tools")),
        stream=stream,
        store=store,
        previous_response_id=previous,
        metadata=_metadata(body.get("metadata")),
        max_output_tokens=_optional_int(body, "max_output_tokens", 1, MAX_OUTPUT_TOKENS),
        temperature=_optional_number(body, "temperature", 0.0, 2.0),
    )


def _optional_bool(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"{value!r} is not of type 'boolean' - '{name}'", param=name)
    return value


def _metadata(metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_KEYS:
        raise bad_request(f"metadata must be an object of at most {MAX_METADATA_KEYS} string values.", "metadata")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise bad_request("metadata keys are at most 64 characters, values strings of at most 512.", "metadata")
    return metadata


def input_items(value: Any) -> list[dict[str, Any]]:
    """``input`` as a list of items: a string is one user message; every item is checked here so that a
    malformed one is a 400 naming it, never an upstream failure."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if not isinstance(value, list) or not value:
        raise bad_request("input must be a string or a non-empty array of input items.", param="input")
    items = []
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise bad_request(f"{where} must be an object", param=where)
        kind = item.get("type") or "message"
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise bad_request(
                    f"Invalid value for '{where}.role': {role!r}; expected one of {', '.join(sorted(ROLES))}.",
                    param=f"{where}.role",
                )
            content = item.get("content")
            if not isinstance(content, str | list):
                raise bad_request(f"{where}.content must be a string or an array of parts", f"{where}.content")
            _chat_content(content, f"{where}.content")  # refuses unknown parts now
            items.append({**item, "type": "message"})
        elif kind == "function_call":
            if not isinstance(item.get("name"), str) or not isinstance(item.get("call_id"), str):
                raise bad_request(f"{where} (function_call) needs 'call_id' and 'name'", param=where)
            if not isinstance(item.get("arguments", ""), str):
                raise bad_request(f"{where}.arguments must be a JSON string", param=f"{where}.arguments")
            items.append(item)
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise bad_request(f"{where} (function_call_output) needs 'call_id'", param=f"{where}.call_id")
            if not isinstance(item.get("output"), str | list):
                raise bad_request(f"{where}.output must be a string or an array of parts", f"{where}.output")
            items.append(item)
        elif kind == "reasoning":
            items.append(item)  # carried for a provider that speaks Responses; a chat completion has no place for it
        else:
            raise bad_request(
                f"Input items of type {kind!r} are not supported by this gateway "
                "(message, function_call, function_call_output and reasoning are).",
                param=f"{where}.type",
            )
    return items


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("tools must be an array", param="tools")
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise bad_request(
                f"tools[{index}]: only function tools are supported by this gateway (got {kind!r}).",
                param=f"tools[{index}].type",
            )
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise bad_request(f"tools[{index}] must be {{'type': 'function', 'name': …}}", param=f"tools[{index}].name")
    return tools


# --- to chat completions -------------------------------------------------------------------------------


def chat_messages(items: list[dict[str, Any]], instructions: str | None) -> list[dict[str, Any]]:
    """The conversation ``items`` as chat messages (``instructions`` a system message first)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    for item in items:
        kind = item.get("type") or "message"
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            content = _chat_content(item["content"], "input")
            if role == "assistant" and not isinstance(content, str):
                content = content_text(content)
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item.get("arguments") or ""},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":  # one assistant turn: its text and its calls
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            text = output if isinstance(output, str) else content_text(_chat_content(output, "input"))
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
    return messages


def _chat_content(content: Any, where: str) -> Any:
    """Responses content (a string or input/output parts) as chat-completions content."""
    if isinstance(content, str):
        return content
    parts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PARTS and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append(
                {"type": "image_url", "image_url": {"url": part["image_url"], "detail": part.get("detail") or "auto"}}
            )
        elif kind == "input_file":  # counted (and refused where no bound is known) like a chat file part
            parts.append(
                {"type": "file", "file": {k: part[k] for k in ("file_id", "file_data", "filename") if k in part}}
            )
        else:
            raise bad_request(
                f"{where}[{index}]: content parts of type {kind!r} are not supported by this gateway "
                "(input_text, output_text, input_image with an image_url, input_file are).",
                param=f"{where}[{index}]",
            )
    return parts


def chat_request(request: ResponsesRequest, history: list[dict[str, Any]], native: bool = True) -> ChatRequest:
    """The chat completion the guard answers for ``request``, continuing the conversation ``history`` (the
    items of its previous response). ``native``: keep the Responses body for a provider that speaks it."""
    items = [*history, *request.items]
    body = request.body
    upstream = {name: value for name, value in body.items() if name not in RESPONSES_FIELDS and value is not None}
    if request.tools:
        upstream["tools"] = [
            {
                "type": "function",
                "function": {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool},
            }
            for tool in request.tools
        ]
    else:
        upstream.pop("parallel_tool_calls", None)
    choice = body.get("tool_choice")
    if choice is not None:
        upstream["tool_choice"] = _tool_choice(choice)
    text_format = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(text_format, dict) and text_format.get("type") in ("json_schema", "json_object"):
        if text_format["type"] == "json_object":
            upstream["response_format"] = {"type": "json_object"}
        else:
            schema = {k: text_format[k] for k in ("name", "schema", "strict", "description") if k in text_format}
            upstream["response_format"] = {"type": "json_schema", "json_schema": schema}
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort"):
        upstream["reasoning_effort"] = reasoning["effort"]
    messages = chat_messages(items, request.instructions)
    if not messages:
        raise bad_request("input has no message to answer.", param="input")
    return ChatRequest(
        model=request.model,
        messages=messages,
        max_tokens=request.max_output_tokens,
        temperature=request.temperature,
        stream=request.stream,
        include_usage=True,  # the usage ends the stream as response.completed's usage
        upstream=upstream,
        native=_native(request, items) if native else None,
        endpoint="/v1/responses",
    )


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise bad_request(
        "tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'name': …}", "tool_choice"
    )


def _native(request: ResponsesRequest, items: list[dict[str, Any]]) -> dict[str, Any]:
    """The client's body for a provider that speaks Responses: the whole conversation as input (agentops keeps
    it, the provider stores nothing), the ids of our own items left out."""
    body = {k: v for k, v in request.body.items() if k not in ("metadata", "previous_response_id", "store", "stream")}
    body["input"] = [
        {k: v for k, v in item.items() if not (k == "id" or (k == "status" and item.get("type") != "reasoning"))}
        for item in items
    ]
    return body


# --- from chat completions -----------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def shell(request: ResponsesRequest, response_id: str, created_at: int | None = None) -> dict[str, Any]:
    """The response object before its output: what ``response.created`` carries and every answer echoes."""
    body = request.body
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at or int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": request.model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": request.previous_response_id,
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "store": request.store,
        "temperature": request.temperature,
        "text": body.get("text") if isinstance(body.get("text"), dict) else {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": request.tools,
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation") or "disabled",
        "usage": None,
        "user": body.get("user"),
        "metadata": request.metadata,
    }


def message_item(text: str, item_id: str | None = None, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [output_text(text)] if status == "completed" else [],
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(call: Mapping[str, Any], item_id: str | None = None, status: str = "completed") -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "id": item_id or new_id("fc"),
        "type": "function_call",
        "status": status,
        "call_id": call.get("id") or new_id("call"),
        "name": function.get("name") or "",
        "arguments": (function.get("arguments") or "") if status == "completed" else "",
    }


def output_items(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An assistant chat message as output items: its text (a message item), then one item per call."""
    items = []
    text = message.get("content")
    if isinstance(text, list):
        text = content_text(text)
    if text:
        items.append(message_item(text))
    calls = list(message.get("tool_calls") or ())
    if isinstance(message.get("function_call"), dict):
        calls.append({"function": message["function_call"]})
    items += [call_item(call) for call in calls if isinstance(call, Mapping)]
    return items


def usage(chat_usage: Any) -> dict[str, Any] | None:
    """Chat-completions usage as Responses usage."""
    if not isinstance(chat_usage, Mapping):
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": prompt + completion,
    }


def finished(response: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    """``response`` with its final status from the chat finish reason (a cut answer is ``incomplete``)."""
    if finish_reason in ("length", "content_filter"):
        reason = "max_output_tokens" if finish_reason == "length" else "content_filter"
        return {**response, "status": "incomplete", "incomplete_details": {"reason": reason}}
    return {**response, "status": "completed"}


def response_object(request: ResponsesRequest, response_id: str, completion: Mapping[str, Any]) -> dict[str, Any]:
    """A whole ``chat.completion`` body (after tool review) as the response object. A native provider's own
    output (``native_response``) is passed on as it came when review left its calls as they were."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    native = completion.get("native_response")
    response = shell(request, response_id, int(completion.get("created") or 0) or None)
    response["model"] = completion.get("model") or request.model
    if isinstance(native, dict) and _same_calls(message_of(native.get("output"))[0], message):
        response["output"] = native.get("output") or []
        response["usage"] = native.get("usage") or usage(completion.get("usage"))
    else:
        response["output"] = output_items(message)
        response["usage"] = usage(completion.get("usage"))
    return finished(response, choice.get("finish_reason"))


def _same_calls(original: Mapping[str, Any], decided: Mapping[str, Any]) -> bool:
    def key(message: Mapping[str, Any]) -> tuple:
        calls = [(c.get("function") or {}).get("arguments") for c in message.get("tool_calls") or ()]
        return (message.get("content") or "", calls)

    return key(original) == key(decided)


def not_found(response_id: str, param: str | None = None) -> WireError:
    what = "Previous response" if param == "previous_response_id" else "Response"
    return WireError(
        404,
        f"{what} with id '{response_id}' not found.",
        param=param,
        code="previous_response_not_found" if param else None,
    )
