"""OpenTelemetry GenAI semantic conventions (the ``gen_ai.*`` registry as of semantic-conventions v1.40+,
status Development): span names, attribute names and the message-content format, in one place.

The spans we emit (DESIGN.md §10):

- ``invoke_agent {agent}`` (INTERNAL): one execution of a run; every execution of one run shares its trace.
- ``agentops.llm {operation}`` / ``agentops.embeddings {operation}`` (INTERNAL): one guarded call — cache,
  reservation, the fallback chain, the settle; our own attributes (``agentops.*``: cost, budget, hops,
  escalation) and no ``gen_ai.usage.*`` so that backends which price spans (Langfuse, LangSmith) count each
  model call once, on its attempt span.
- ``chat {model}`` / ``embeddings {model}`` (CLIENT): one attempt at one provider — every retry and every
  fallback hop is its own span, with the ``gen_ai.*`` request, response and usage attributes and
  ``error.type`` when the attempt failed.
- ``execute_tool {name}`` (INTERNAL): one tool call of a run.

Message content (``gen_ai.input.messages`` / ``gen_ai.output.messages``, JSON strings in the conventions'
parts format) is recorded only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_STREAM = "gen_ai.request.stream"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CONVERSATION = "gen_ai.conversation.id"
AGENT_NAME = "gen_ai.agent.name"
AGENT_ID = "gen_ai.agent.id"
AGENT_DESCRIPTION = "gen_ai.agent.description"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_DESCRIPTION = "gen_ai.tool.description"
TOOL_TYPE = "gen_ai.tool.type"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"

# Our own, beside the convention's.
COST_USD = "agentops.cost_usd"
HANDLER = "agentops.handler"
HOP = "agentops.fallback.hop"  # 0 the primary model, 1 the first backup, ...
ATTEMPT = "agentops.attempt"  # 1, 2, ... within one hop
BREAKER_STATE = "agentops.breaker.state"  # as this process last saw it before the attempt
ESCALATION_ID = "agentops.escalation.id"
BUDGET = "agentops.budget.name"
BUDGET_RESERVATION = "agentops.budget.reservation_id"

# The provider whose API an implementation speaks (the conventions' discriminator, not our configured name).
AGENTOPS_PROVIDER = "agentops"


def capture_content() -> bool:
    """Whether prompts and answers go on spans (read each call: a test or an operator may flip it)."""
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() == "true"


def provider_name(provider: Any) -> str:
    """``gen_ai.provider.name`` of a provider object: its ``gen_ai_provider`` (``openai`` for every
    OpenAI-compatible upstream, ``anthropic``…), else ``openai``."""
    return getattr(provider, "gen_ai_provider", None) or "openai"


@lru_cache(maxsize=256)
def _server(base_url: str) -> tuple[str | None, int | None]:
    try:
        parts = urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80 if parts.scheme == "http" else None)
        return parts.hostname, port
    except ValueError:
        return None, None


def server_attributes(provider: Any) -> dict[str, Any]:
    """``server.address`` / ``server.port`` of a provider with a ``base_url``."""
    base_url = getattr(provider, "base_url", None)
    if not base_url:
        return {}
    host, port = _server(str(base_url))
    if not host:
        return {}
    return {"server.address": host, "server.port": port} if port else {"server.address": host}


def span_name(operation: str, model: str | None) -> str:
    """``{gen_ai.operation.name} {gen_ai.request.model}`` (the operation alone without a model)."""
    return f"{operation} {model}" if model else operation


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: the text ones
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return "" if content is None else json.dumps(content, default=str)


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _tool_call_parts(calls: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    parts = []
    for call in calls or ():
        function = call.get("function") or {}
        part = {"type": "tool_call", "name": function.get("name") or call.get("name") or ""}
        if call.get("id"):
            part["id"] = call["id"]
        part["arguments"] = _arguments(function.get("arguments", call.get("arguments")))
        parts.append(part)
    return parts


def input_messages(messages: Iterable[Mapping[str, Any]]) -> str:
    """OpenAI-shaped chat messages as ``gen_ai.input.messages`` (the conventions' parts format, JSON)."""
    converted = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        role = str(message.get("role") or "user")
        parts: list[dict[str, Any]] = []
        if role == "tool":
            part = {"type": "tool_call_response", "response": _text(message.get("content"))}
            if message.get("tool_call_id"):
                part["id"] = message["tool_call_id"]
            parts.append(part)
        else:
            text = _text(message.get("content"))
            if text:
                parts.append({"type": "text", "content": text})
            parts += _tool_call_parts(message.get("tool_calls"))
            if message.get("function_call"):
                parts += _tool_call_parts([{"function": message["function_call"]}])
        converted.append({"role": role, "parts": parts})
    return json.dumps(converted, default=str, ensure_ascii=False)


def output_messages(text: str, tool_calls: Any = None, finish_reason: str | None = None) -> str:
    """One answer as ``gen_ai.output.messages`` (JSON)."""
    parts: list[dict[str, Any]] = [{"type": "text", "content": text}] if text else []
    parts += _tool_call_parts(tool_calls)
    return json.dumps(
        [{"role": "assistant", "parts": parts, "finish_reason": finish_reason or "stop"}],
        default=str,
        ensure_ascii=False,
    )


def usage_attributes(input_tokens: int, output_tokens: int | None, cached_tokens: int = 0) -> dict[str, Any]:
    """``gen_ai.usage.*``: the input count includes the cached part, which is also given on its own."""
    attributes: dict[str, Any] = {INPUT_TOKENS: int(input_tokens or 0)}
    if output_tokens is not None:
        attributes[OUTPUT_TOKENS] = int(output_tokens or 0)
    if cached_tokens:
        attributes[CACHE_READ_TOKENS] = int(cached_tokens)
    return attributes


# --- attempt spans (one per provider call) -----------------------------------------------------------
_tracer = trace.get_tracer("agentops.runtime")


def start_attempt(
    request: Any,
    *,
    model: str,
    provider: Any,
    configured_provider: str,
    handler: str,
    hop: int,
    attempt: int,
    breaker: Any = None,
    embeds: bool = False,
) -> Any:
    """Start the CLIENT span of one attempt (``chat {model}`` / ``embeddings {model}``) under the current
    span (the guarded call). The sampling-relevant attributes are set at creation, as the conventions ask."""
    operation = "embeddings" if embeds else "chat"
    metadata = getattr(request, "metadata", None) or {}
    attributes: dict[str, Any] = {
        OPERATION: operation,
        PROVIDER: provider_name(provider),
        REQUEST_MODEL: model,
        "agentops.provider": configured_provider,
        "agentops.operation": request.operation,
        HANDLER: handler,
        HOP: hop,
        ATTEMPT: attempt,
        **server_attributes(provider),
    }
    session = metadata.get("session_id", metadata.get("session"))
    if session:
        attributes[CONVERSATION] = str(session)
    if not embeds:
        if request.max_tokens:
            attributes[REQUEST_MAX_TOKENS] = int(request.max_tokens)
        if request.temperature is not None:
            attributes[REQUEST_TEMPERATURE] = float(request.temperature)
        if request.stream:
            attributes[REQUEST_STREAM] = True
    state = getattr(breaker, "seen_state", None) if breaker is not None else None
    if state is not None:
        attributes[BREAKER_STATE] = getattr(state, "value", str(state))
    span = _tracer.start_span(span_name(operation, model), kind=SpanKind.CLIENT, attributes=attributes)
    if not embeds and span.is_recording() and capture_content():
        span.set_attribute(INPUT_MESSAGES, input_messages(request.messages))
    return span


def answered(span: Any, result: Any, *, embeds: bool = False) -> None:
    """Record a provider's answer on its attempt span (the span stays open: the caller ends it)."""
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {RESPONSE_MODEL: result.model or ""}
    if embeds:
        if result.input_tokens is not None:
            attributes[INPUT_TOKENS] = int(result.input_tokens)
    else:
        attributes.update(usage_attributes(result.input_tokens, result.output_tokens, result.cached_tokens))
        if result.finish_reason:
            attributes[FINISH_REASONS] = (result.finish_reason,)
        if capture_content():
            attributes[OUTPUT_MESSAGES] = output_messages(result.text, result.tool_calls, result.finish_reason)
    raw = getattr(result, "raw", None)
    if isinstance(raw, Mapping) and isinstance(raw.get("id"), str):
        attributes[RESPONSE_ID] = raw["id"]
    span.set_attributes(attributes)


def failed(span: Any, error_type: str, exc: BaseException | None = None, *, status: int | None = None) -> None:
    """Mark an attempt (or any GenAI span) failed: ``error.type``, status ERROR, the exception event."""
    if span.is_recording():
        span.set_attribute(ERROR_TYPE, error_type or "_OTHER")
        if status is not None:
            span.set_attribute("http.response.status_code", int(status))
        if exc is not None:
            span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}" if exc is not None else error_type))
