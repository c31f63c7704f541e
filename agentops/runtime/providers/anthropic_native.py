"""Anthropic's Messages API as a provider, through the official ``anthropic`` SDK.

The guard speaks chat completions (``LLMRequest`` / ``LLMResult`` / OpenAI stream chunks), so this provider
translates at its edge, both ways:

- **Request.** A request that came in as Anthropic Messages (the gateway's ``/v1/messages``) carries the
  client's own body in ``metadata[NATIVE_REQUEST]``: it is sent as it came (``cache_control``, ``thinking``,
  ``top_k`` and every field we do not know survive), with the model and the output cap the guard chose. Any
  other request (a chat-completions client naming a Claude model) is translated: system and developer
  messages become ``system``, tool results ``tool_result`` blocks, tool calls ``tool_use`` blocks, images
  ``image`` blocks (base64 or url), tools ``input_schema``, ``stop`` ``stop_sequences``.
- **Answer.** The message becomes a ``chat.completion`` (``LLMResult.raw``) whose ``NATIVE`` key keeps the
  Anthropic body as it came, so ``/v1/messages`` answers it unchanged. Usage: Anthropic's ``input_tokens``
  excludes cache reads and writes, OpenAI's ``prompt_tokens`` includes them — ``prompt_tokens`` is their sum
  (what the ledger charges as input) and ``cached_tokens`` the cache reads.
- **Stream.** Anthropic's events become OpenAI chunks; the first carries ``START`` (the message id and the
  usage known at the start), the finish chunk ``STOP`` (Anthropic's own ``stop_reason`` and
  ``stop_sequence``), and the last one the usage, as ``stream_options.include_usage`` would.

One ``anthropic.Anthropic`` client per provider with the SDK's retries off: the retry policy is ours.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anthropic

try:  # the SDK's HTTP client library (recent SDKs vendor a fork of httpx under this name)
    import httpx2 as sdk_http
except ImportError:  # pragma: no cover - older SDKs use httpx itself
    import httpx as sdk_http

from agentops.runtime.errors import (
    ErrorClass,
    ProviderError,
    RefusedDestination,
    classify,
    error_class_for_status,
    parse_retry_after,
)
from agentops.runtime.providers.base import LLMRequest, LLMResult, content_text, open_stream

NATIVE_REQUEST = "anthropic_request"  # LLMRequest.metadata key: the client's own Messages body (NativeRequest)
NATIVE = "anthropic_message"  # LLMResult.raw key: the Anthropic message as it came
START = "anthropic_start"  # first stream chunk: {"id", "usage"} of message_start
STOP = "anthropic_stop"  # finish chunk: {"stop_reason", "stop_sequence"} as Anthropic said them
DEFAULT_MAX_TOKENS = 4096

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Headers an Anthropic client sends that the upstream must see as they were.
PASSED_HEADERS = ("anthropic-version", "anthropic-beta")


@dataclass(frozen=True)
class NativeRequest:
    """What an Anthropic client sent: its body (without ``model`` and ``stream``) and its version and beta
    headers. Kept in the request's metadata, which reaches ledger rows and logs only by named keys; its
    ``str`` is short so a parked settle (JSON with ``default=str``) does not carry the prompt."""

    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return "<native Anthropic request>"

    __repr__ = __str__


class AnthropicProvider:
    """Messages against ``base_url`` (the SDK's default, api.anthropic.com, when None) with ``api_key``."""

    gen_ai_provider = "anthropic"  # the OpenTelemetry GenAI ``gen_ai.provider.name``

    def __init__(self, name: str, base_url: str | None, api_key: str, *, client: Any = None) -> None:
        self.name = name
        self.base_url = base_url
        self.client = client or anthropic.Anthropic(base_url=base_url, api_key=api_key or "unset", max_retries=0)

    def __repr__(self) -> str:
        return f"AnthropicProvider({self.name!r}, base_url={self.base_url!r})"

    def complete(self, request: LLMRequest, timeout: float) -> LLMResult:
        try:
            response = self.client.post(
                "/v1/messages",
                body=anthropic_body(request),
                cast_to=sdk_http.Response,
                options=self._options(request, timeout),
            )
            data = json.loads(response.content)
        except Exception as exc:
            raise _classify(exc, self.name, request.model) from exc
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise ProviderError(
                ErrorClass.INVALID_RESPONSE,
                "the response body is not a message",
                reason="malformed",
                provider=self.name,
                model=request.model,
            )
        chat = chat_completion(data, request.model)
        message = chat["choices"][0]["message"]
        usage = chat["usage"]
        return LLMResult(
            text=message.get("content") or "",
            model=chat["model"],
            provider=self.name,
            input_tokens=usage["prompt_tokens"],
            output_tokens=usage["completion_tokens"],
            cached_tokens=usage["prompt_tokens_details"]["cached_tokens"],
            finish_reason=chat["choices"][0]["finish_reason"],
            tool_calls=message.get("tool_calls") or None,
            raw=chat,
        )

    def open_stream(self, request: LLMRequest, timeout: float) -> LLMResult:
        """Start a streamed message and wait for its first event (failures a retry can repair are raised
        here, classified); the result's ``stream`` yields OpenAI chunks."""
        body = {**anthropic_body(request), "stream": True}
        try:
            response = self.client.post(
                "/v1/messages",
                body=body,
                cast_to=sdk_http.Response,
                options=self._options(request, timeout),
                stream=True,
            )
        except Exception as exc:
            raise _classify(exc, self.name, request.model) from exc
        chunks = self._chunks(request, response)
        first, stream = open_stream(chunks, response, provider=self.name, model=request.model, unit="event")
        return LLMResult(
            text="",
            model=first[1].get("model") or request.model,
            provider=self.name,
            stream=stream,
        )

    def _options(self, request: LLMRequest, timeout: float) -> dict[str, Any]:
        options: dict[str, Any] = {"timeout": timeout}
        native = request.metadata.get(NATIVE_REQUEST)
        if isinstance(native, NativeRequest) and native.headers:
            options["headers"] = dict(native.headers)
        return options

    def _chunks(self, request: LLMRequest, response: Any) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """``(payload, chunk)``: each Anthropic event as the OpenAI chunk it means; failures leave classified."""
        try:
            translator = StreamToChunks(request.model)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # "event:" lines (the data's "type" says the same), blank separators
                try:
                    event = json.loads(line[5:])
                except ValueError:
                    raise ProviderError(
                        ErrorClass.INVALID_RESPONSE,
                        "a stream event is not JSON",
                        reason="malformed",
                        provider=self.name,
                        model=request.model,
                    ) from None
                if not isinstance(event, dict):
                    raise ProviderError(
                        ErrorClass.INVALID_RESPONSE, "a stream event is not an object", reason="malformed",
                        provider=self.name, model=request.model,
                    )  # fmt: skip
                if event.get("type") == "error":
                    error = event.get("error") if isinstance(event.get("error"), dict) else {}
                    kind = str(error.get("type") or "")
                    raise ProviderError(
                        ErrorClass.RATE_LIMIT if kind == "rate_limit_error" else ErrorClass.SERVICE_UNAVAILABLE,
                        str(error.get("message") or "error in the stream"),
                        reason="stream_error",
                        provider=self.name,
                        model=request.model,
                    )
                for chunk in translator.feed(event):
                    yield json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode(), chunk
                if translator.done:
                    return
        except ProviderError:
            raise
        except Exception as exc:
            raise _classify(exc, self.name, request.model) from exc


def _classify(exc: BaseException, provider: str, model: str) -> ProviderError:
    """The anthropic SDK's exceptions as ``ProviderError`` (the exception stays the ``__cause__``: the
    gateway reads an upstream 4xx's body from it)."""

    def make(error_class: ErrorClass, **kw: Any) -> ProviderError:
        error = ProviderError(error_class, str(exc) or type(exc).__name__, provider=provider, model=model, **kw)
        error.__cause__ = exc
        return error

    if isinstance(exc, anthropic.APITimeoutError):
        return make(ErrorClass.TIMEOUT, reason="timeout")
    if isinstance(exc, anthropic.APIConnectionError):
        if isinstance(exc.__cause__, RefusedDestination):  # the address guard: permanent, never retried
            return classify(exc, provider=provider, model=model)
        return make(ErrorClass.CONNECTION, reason="connection")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        return make(
            error_class_for_status(status),
            status=status,
            retry_after=parse_retry_after(getattr(exc.response, "headers", None)),
            reason=f"http_{status}",
        )
    if isinstance(exc, anthropic.APIResponseValidationError | json.JSONDecodeError):
        return make(ErrorClass.INVALID_RESPONSE, reason="malformed")
    return classify(exc, provider=provider, model=model)


# --- requests: chat completions → Messages ---------------------------------------------------------------


def anthropic_body(request: LLMRequest) -> dict[str, Any]:
    """The Messages body for ``request``: the client's own when it spoke Messages, else a translation."""
    native = request.metadata.get(NATIVE_REQUEST)
    if isinstance(native, NativeRequest):
        body = dict(native.body)
    else:
        body = chat_to_messages(request.messages, request.extra)
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0..1
    body["model"] = request.model
    body["max_tokens"] = request.max_tokens or DEFAULT_MAX_TOKENS
    return body


def chat_to_messages(messages: Sequence[Mapping[str, Any]], extra: Mapping[str, Any]) -> dict[str, Any]:
    """A chat-completions request (messages and its other fields, e.g. ``extra_body``) as a Messages body."""
    upstream = dict(extra.get("extra_body") or {}) if isinstance(extra.get("extra_body"), Mapping) else {}
    upstream.update({key: value for key, value in extra.items() if key != "extra_body"})
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.append(content_text(content))
            continue
        if role in ("tool", "function"):
            result = {
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id") or message.get("name") or ""),
                "content": content_text(content),
            }
            _add_turn(turns, "user", [result])
            continue
        blocks = _blocks(content)
        if role == "assistant":
            calls = list(message.get("tool_calls") or ())
            if isinstance(message.get("function_call"), Mapping):
                calls.append({"id": message["function_call"].get("name"), "function": message["function_call"]})
            for index, call in enumerate(calls):
                function = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": str(call.get("id") or f"toolu_{index}"),
                        "name": str(function.get("name") or "tool"),
                        "input": _json_object(function.get("arguments")),
                    }
                )
        _add_turn(turns, "assistant" if role == "assistant" else "user", blocks)
    body: dict[str, Any] = {"messages": turns}
    if any(system):
        body["system"] = "\n\n".join(part for part in system if part)
    tools = [_tool(tool) for tool in upstream.get("tools") or () if isinstance(tool, Mapping)]
    tools += [_tool({"function": f}) for f in upstream.get("functions") or () if isinstance(f, Mapping)]
    if tools:
        body["tools"] = tools
    choice = _tool_choice(upstream.get("tool_choice"), upstream.get("parallel_tool_calls"))
    if choice is not None:
        body["tool_choice"] = choice
    stop = upstream.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(upstream.get("top_p"), int | float):
        body["top_p"] = upstream["top_p"]
    if isinstance(upstream.get("user"), str) and upstream["user"]:
        body["metadata"] = {"user_id": upstream["user"]}
    return body


def _add_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Messages alternate user and assistant: consecutive turns of one role are merged."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"] += blocks
    else:
        turns.append({"role": role, "content": blocks})


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content:
        if isinstance(part, str):
            blocks.append({"type": "text", "text": part})
        elif isinstance(part, Mapping) and part.get("type") == "image_url":
            image = part.get("image_url")
            url = str(image.get("url") if isinstance(image, Mapping) else image or "")
            blocks.append({"type": "image", "source": image_source(url)})
        elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
    return blocks


def image_source(url: str) -> dict[str, Any]:
    """An OpenAI image URL (a ``data:`` URL or a link) as an Anthropic image ``source``."""
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0] or "image/png"
        if ";base64" not in header:
            data = base64.b64encode(data.encode()).decode()
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool.get("function"), Mapping) else tool
    out: dict[str, Any] = {
        "name": str(function.get("name") or "tool"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name")
        out: dict[str, Any] = {"type": "tool", "name": name} if name else {"type": "auto"}
    else:
        out = {"type": {"required": "any", "none": "none"}.get(str(choice), "auto")}
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _json_object(raw: Any) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        parsed = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {"_raw": str(raw)}
    return parsed if isinstance(parsed, dict) else {"_raw": parsed}


# --- answers: Messages → chat completions -------------------------------------------------------------


def openai_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic's usage as OpenAI's: prompt tokens include the cache reads and writes."""
    fresh = int(usage.get("input_tokens") or 0)
    read = int(usage.get("cache_read_input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    output = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": fresh + read + written,
        "completion_tokens": output,
        "total_tokens": fresh + read + written + output,
        "prompt_tokens_details": {"cached_tokens": read},
        "cache_creation_input_tokens": written,
    }


def chat_completion(message: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A Messages answer as a ``chat.completion`` body; ``NATIVE`` keeps the answer as it came."""
    text = "".join(str(b.get("text") or "") for b in message.get("content") or () if b.get("type") == "text")
    calls = [
        {
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input") or {})},
        }
        for block in message.get("content") or ()
        if block.get("type") == "tool_use"
    ]
    reply: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": message.get("id") or "",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": STOP_TO_FINISH.get(str(message.get("stop_reason")), "stop"),
            }
        ],
        "usage": openai_usage(message.get("usage") or {}),
        NATIVE: dict(message),
    }


class StreamToChunks:
    """Anthropic stream events in, OpenAI chunks out (``feed``); ``done`` after ``message_stop``."""

    def __init__(self, model: str) -> None:
        self.base: dict[str, Any] = {"id": "", "object": "chat.completion.chunk", "created": int(time.time())}
        self.base["model"] = model
        self.calls: dict[int, int] = {}  # content block index → tool call index
        self.usage: dict[str, Any] = {}
        self.done = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**self.base, "choices": [choice], **extra}

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.base["id"] = message.get("id") or ""
            self.base["model"] = message.get("model") or self.base["model"]
            self.usage = dict(message.get("usage") or {})
            start = {"id": self.base["id"], "usage": dict(self.usage)}
            return [self._chunk({"role": "assistant", "content": ""}, **{START: start})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.calls[int(event.get("index") or 0)] = len(self.calls)
                head = {"index": index, "id": block.get("id"), "type": "function"}
                return [
                    self._chunk({"tool_calls": [{**head, "function": {"name": block.get("name"), "arguments": ""}}]})
                ]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text") or ""})]
            if delta.get("type") == "input_json_delta":
                index = self.calls.get(int(event.get("index") or 0), 0)
                piece = {"index": index, "function": {"arguments": delta.get("partial_json") or ""}}
                return [self._chunk({"tool_calls": [piece]})]
            return []  # thinking, signatures, citations: not part of a chat completion
        if kind == "message_delta":
            self.usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            delta = event.get("delta") or {}
            stop = {"stop_reason": delta.get("stop_reason"), "stop_sequence": delta.get("stop_sequence")}
            finish = STOP_TO_FINISH.get(str(delta.get("stop_reason")), "stop")
            return [self._chunk({}, finish, **{STOP: stop})]
        if kind == "message_stop":
            self.done = True
            return [{**self.base, "choices": [], "usage": openai_usage(self.usage)}]
        return []  # ping, unknown events
