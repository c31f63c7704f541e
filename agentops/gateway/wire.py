"""OpenAI's chat-completions wire format: request validation, response bodies, stream chunks, errors.

Pure functions over dicts and bytes (no Django): what ``/v1/chat/completions`` and ``/v1/models`` accept
and answer, shaped so the official ``openai`` SDK parses every answer and raises its usual exception class
for every error (``{"error": {"message", "type", "param", "code"}}`` with OpenAI's status codes).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentops.lib import jsonbody
from agentops.runtime.tokens import UnboundedInput, prompt_token_bound_for_models

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
# Fields the gateway reads itself; everything else goes to the upstream as it came.
OWN_FIELDS = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "stream", "stream_options", "n"}
)
MAX_OUTPUT_TOKENS = 1_000_000
MAX_MODEL_CHARS = 256


class WireError(Exception):
    """An error answered in OpenAI's shape. ``retryable`` becomes the ``x-should-retry`` header the SDK
    obeys (False for a spent budget: asking again cannot help)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.retryable = retryable

    def payload(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body(self) -> bytes:
        return dumps(self.payload())

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", b"application/json")]
        if self.retry_after is not None:
            headers.append((b"retry-after", str(max(1, math.ceil(self.retry_after))).encode()))
        if self.retryable is not None:
            headers.append((b"x-should-retry", b"true" if self.retryable else b"false"))
        return headers


def bad_request(message: str, param: str | None = None, code: str | None = None) -> WireError:
    return WireError(400, message, param=param, code=code)


@dataclass
class ChatRequest:
    """A validated ``/v1/chat/completions`` body. ``upstream`` holds the fields sent on unchanged (tools,
    response_format, stop, seed, user …); ``max_tokens`` is the cap sent and reserved (the client's, or
    the gateway default when it named none) and ``cap_field`` the name it goes by."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None
    cap_field: str = "max_tokens"
    temperature: float | None = None
    stream: bool = False
    include_usage: bool = False
    upstream: dict[str, Any] = field(default_factory=dict)
    native: dict[str, Any] | None = None  # a /v1/responses body for a provider that speaks Responses
    endpoint: str = "/v1/chat/completions"  # where the client sent it (another wire format translated here)

    @property
    def has_tools(self) -> bool:
        return bool(self.upstream.get("tools") or self.upstream.get("functions"))

    @property
    def user(self) -> str:
        user = self.upstream.get("user")
        return user if isinstance(user, str) else ""


def parse_chat_request(raw: bytes) -> ChatRequest:
    """The request, or a ``WireError`` (400) naming the offending parameter like OpenAI does."""
    try:
        body = jsonbody.loads(raw)
    except jsonbody.BodyProblem as problem:  # nested too deep, or text PostgreSQL cannot store
        raise bad_request(problem.message, param=problem.where or None) from None
    except (ValueError, UnicodeDecodeError):
        raise bad_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly. The OpenAI API expects a JSON payload.)"
        ) from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")

    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("you must provide a model parameter", param="model")
    if len(model) > MAX_MODEL_CHARS:
        raise bad_request(f"model must be at most {MAX_MODEL_CHARS} characters", param="model")
    messages = _messages(body.get("messages"))

    cap_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _optional_int(body, cap_field, 1, MAX_OUTPUT_TOKENS)
    temperature = _optional_number(body, "temperature", 0.0, 2.0)
    _optional_number(body, "top_p", 0.0, 1.0)
    n = _optional_int(body, "n", 1, 128)
    if n is not None and n != 1:
        raise bad_request("n > 1 is not supported by this gateway (each choice is reserved and guarded).", "n")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request(f"{stream!r} is not of type 'boolean' - 'stream'", param="stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise bad_request(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
            )
        if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
            raise bad_request('stream_options must be an object like {"include_usage": true}', "stream_options")
        include_usage = bool(options.get("include_usage"))
    _tools(body.get("tools"))
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request(f"{user!r} is not of type 'string' - 'user'", param="user")
    response_format = body.get("response_format")
    if response_format is not None and not isinstance(response_format, dict):
        raise bad_request("response_format must be an object", param="response_format")

    return ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        cap_field=cap_field,
        temperature=temperature,
        stream=stream,
        include_usage=include_usage,
        upstream={key: value for key, value in body.items() if key not in OWN_FIELDS},
    )


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty array of message objects", param="messages")
    for index, message in enumerate(messages):
        where = f"messages.[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object", param=where)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise bad_request(
                f"Invalid value for '{where}.role': {role!r}; expected one of {', '.join(sorted(ROLES))}.",
                param=f"{where}.role",
            )
        content = message.get("content")
        if content is None:
            if role not in ("assistant", "function"):
                raise bad_request(f"{where}.content is required for role {role!r}", param=f"{where}.content")
        elif not isinstance(content, str | list):
            raise bad_request(f"{where}.content must be a string or an array of parts", param=f"{where}.content")
        elif isinstance(content, list) and not all(isinstance(part, dict | str) for part in content):
            raise bad_request(f"{where}.content parts must be objects", param=f"{where}.content")
    return messages


def _tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise bad_request("tools must be an array", param="tools")
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise bad_request(
                f"tools[{index}] must be {{'type': 'function', 'function': {{'name': …}}}}", param=f"tools[{index}]"
            )


def _optional_int(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{value!r} is not of type 'integer' - '{name}'", param=name)
    if not low <= value <= high:
        raise bad_request(f"Invalid '{name}': {value}; expected a value between {low} and {high}.", param=name)
    return value


def _optional_number(body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(f"{value!r} is not of type 'number' - '{name}'", param=name)
    if not low <= value <= high:
        raise bad_request(f"Invalid '{name}': {value}; expected a value between {low} and {high}.", param=name)
    return float(value)


def input_token_bound(request: ChatRequest, models: Sequence[str]) -> int:
    """The most input tokens any model of the route can charge for this request (what the reservation
    holds): the messages and tool or function definitions counted by ``agentops.runtime.tokens``. A part
    with no known bound (an image on a model without a documented image rule) is a 400."""
    definitions: list[Any] = []
    for name in ("tools", "functions"):  # passed on unchecked: the upstream refuses a malformed one
        value = request.upstream.get(name)
        definitions += value if isinstance(value, list) else [value] if value else []
    try:
        return prompt_token_bound_for_models(request.messages, [request.model, *models], tools=definitions)
    except UnboundedInput as exc:
        raise bad_request(str(exc), param=exc.param, code="unsupported_content") from None


# --- answers -------------------------------------------------------------------------------------------


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def completion(
    *,
    completion_id: str,
    model: str,
    text: str,
    tool_calls: Sequence[Mapping[str, Any]] | None,
    finish_reason: str | None,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    created: int | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` body for an answer that did not come from an OpenAI-compatible upstream (the
    simulated provider, the rule engine, the cache)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = [dict(call) for call in tool_calls]
    finish = finish_reason if finish_reason in FINISH_REASONS else ("tool_calls" if tool_calls else "stop")
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
        },
    }


def sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


DONE = b"data: [DONE]\n\n"


def chunks_of(body: Mapping[str, Any], include_usage: bool) -> list[bytes]:
    """A whole ``chat.completion`` as the SSE events OpenAI would have streamed for it (for answers that
    were not streamed upstream): role, content in pieces, tool calls, finish, optional usage, ``[DONE]``."""
    base = {
        "id": body["id"],
        "object": "chat.completion.chunk",
        "created": body["created"],
        "model": body["model"],
        "system_fingerprint": body.get("system_fingerprint"),
    }
    choice = body["choices"][0]
    message = choice["message"]

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            chunk["usage"] = None
        return sse(dumps(chunk))

    events = [event({"role": "assistant", "content": "", "refusal": None})]
    text = message.get("content") or ""
    for start in range(0, len(text), 64):
        events.append(event({"content": text[start : start + 64]}))
    for index, call in enumerate(message.get("tool_calls") or ()):
        events.append(event({"tool_calls": [tool_call_delta(index, call)]}))
    if message.get("function_call"):
        events.append(event({"function_call": function_call_delta(message["function_call"])}))
    events.append(event({}, choice["finish_reason"]))
    if include_usage:
        events.append(sse(dumps({**base, "choices": [], "usage": body.get("usage")})))
    events.append(DONE)
    return events


def tool_call_delta(index: int, call: Mapping[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "index": index,
        "id": call.get("id"),
        "type": "function",
        "function": {"name": function.get("name"), "arguments": function.get("arguments") or ""},
    }


def function_call_delta(function: Mapping[str, Any]) -> dict[str, Any]:
    """A legacy ``function_call`` whole, as one stream delta."""
    return {"name": function.get("name"), "arguments": function.get("arguments") or ""}


def stream_error(message: str, type_: str = "server_error", code: str | None = None) -> bytes:
    """An error after the stream started (the status line is gone): the SDK raises ``APIError`` for it."""
    return sse(dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}))


def model_list(models: Iterable[tuple[str, str]]) -> dict[str, Any]:
    return {"object": "list", "data": [model_entry(name, owner) for name, owner in models]}


def model_entry(name: str, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1700000000, "owned_by": owner}


def model_not_found(model: str) -> WireError:
    return WireError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def held_tail(
    base: Mapping[str, Any],
    original: Mapping[str, Any],
    rewritten: Mapping[str, Any],
    finish_reason: str | None,
    usage_event: bytes | None,
) -> list[bytes]:
    """The events that end a streamed answer whose held tool calls a reviewer changed: the text the
    decisions added, the calls left, the finish chunk and the usage chunk (when the client asked for it)."""

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse(dumps({**base, "object": "chat.completion.chunk", "choices": [choice]}))

    events = []
    added = (rewritten.get("content") or "")[len(original.get("content") or "") :]
    if added:
        events.append(event({"content": added}))
    for index, call in enumerate(rewritten.get("tool_calls") or ()):
        events.append(event({"tool_calls": [tool_call_delta(index, call)]}))
    if rewritten.get("function_call"):
        events.append(event({"function_call": function_call_delta(rewritten["function_call"])}))
    events.append(event({}, finish_reason if finish_reason in FINISH_REASONS else "stop"))
    if usage_event:
        events.append(usage_event)
    return events
