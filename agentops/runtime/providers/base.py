"""The provider contract: one request shape in, one result shape out, classified errors on failure."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agentops.runtime.errors import ErrorClass, ProviderError

Message = Mapping[str, Any]


@dataclass(frozen=True)
class LLMRequest:
    """One chat completion request, provider-neutral.

    ``model`` may be empty: the router then picks the models for ``operation``. ``extra`` carries any other
    chat-completions parameter (``tools``, ``response_format``, ``stop``, ``seed``...) through unchanged.
    ``metadata`` is for agentops itself (session, agent, run, step) and is never sent to a provider.

    ``stream``: answer as a stream of OpenAI chat-completion chunks (``LLMResult.stream``) when the provider
    can. ``passthrough`` (the gateway): keep the provider's own response body (``LLMResult.raw``) and let a
    client error (400, 404 …) end the chain at once — another model would refuse the same request.
    """

    messages: Sequence[Message]
    model: str = ""
    operation: str = "default"
    max_tokens: int | None = None
    temperature: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False
    passthrough: bool = False

    def with_model(self, model: str) -> LLMRequest:
        return self if model == self.model else dataclasses.replace(self, model=model)

    def last_user_text(self) -> str:
        """The text of the last user message (parts of a multi-part content joined)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return content_text(message.get("content"))
        return ""


@dataclass(frozen=True)
class LLMResult:
    """A provider's answer. ``tool_calls`` holds the OpenAI-shaped tool calls when the model made some,
    ``function_call`` a legacy function call (an answer asked with ``functions``) — an answer too.

    A streamed answer has ``stream``: an iterator of ``(payload, chunk)`` — the bytes of one SSE ``data:``
    line as the provider sent them and their parsed chunk — whose first chunk has already arrived; ``text``
    and the token counts are then empty (``GuardedStream`` counts them as the chunks pass).
    """

    text: str
    model: str
    provider: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None
    raw: dict[str, Any] | None = None
    stream: Iterator[tuple[bytes, dict[str, Any]]] | None = None


@dataclass(frozen=True)
class EmbeddingsRequest:
    """One embeddings request, provider-neutral: ``input`` as the client sent it (a string, a list of strings,
    a list of token ids or a list of such lists), ``extra`` the other body fields sent on unchanged
    (``encoding_format``, ``dimensions``, ``user`` …), ``metadata`` for agentops only (never sent).

    It walks the same fallback chain as an ``LLMRequest`` (``operation``, ``with_model``, ``passthrough``);
    ``max_tokens`` is 0 and ``stream`` False because an embedding has no output tokens and never streams.
    """

    input: Any
    model: str = ""
    operation: str = "embeddings"
    extra: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    passthrough: bool = True
    max_tokens: int = 0
    stream: bool = False

    def with_model(self, model: str) -> EmbeddingsRequest:
        return self if model == self.model else dataclasses.replace(self, model=model)

    def body(self) -> dict[str, Any]:
        """The JSON body of an OpenAI ``/embeddings`` call."""
        return {"model": self.model, "input": self.input, **self.extra}

    @property
    def item_count(self) -> int:
        """How many vectors the answer must hold: one per string or token list."""
        return embedding_item_count(self.input)


@dataclass(frozen=True)
class EmbeddingsResult:
    """A provider's embeddings answer: ``raw`` is its body (``object: "list"``, ``data``, ``model``,
    ``usage``) and ``content`` the bytes it came as, when they can be passed on unchanged. ``input_tokens``
    is None when the provider reported no usage (the guard then charges the bound it reserved)."""

    model: str
    provider: str
    raw: dict[str, Any]
    input_tokens: int | None = None
    content: bytes | None = None


def embedding_item_count(value: Any) -> int:
    """Vectors an embeddings ``input`` asks for: 1 for a string or one list of token ids, else its length."""
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, int) for v in value)):
        return 1
    return len(value) if isinstance(value, list) else 1


@runtime_checkable
class Embedder(Protocol):
    """A provider that also answers embeddings (the fallback chain asks ``embed`` for an
    ``EmbeddingsRequest``; a provider without it is skipped)."""

    name: str

    def embed(self, request: EmbeddingsRequest, timeout: float) -> EmbeddingsResult: ...


@runtime_checkable
class Provider(Protocol):
    """Anything that answers an ``LLMRequest`` within ``timeout`` seconds or raises ``ProviderError``."""

    name: str

    def complete(self, request: LLMRequest, timeout: float) -> LLMResult: ...


def content_text(content: Any) -> str:
    """Text of an OpenAI message ``content`` (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
        elif isinstance(part, str):
            parts.append(part)
    return "\n".join(parts)


def estimate_tokens(text: str) -> int:
    """A cheap token estimate (≈ 4 characters per token), never 0 for non-empty text."""
    return (len(text) + 3) // 4


def estimate_prompt_tokens(messages: Sequence[Message]) -> int:
    """A cheap prompt-token estimate: ~4 chars per token plus the per-message framing OpenAI adds."""
    total = 3
    for message in messages:
        total += 4 + estimate_tokens(content_text(message.get("content")))
    return total


def open_stream(chunks: Iterator, response: Any, *, provider: str, model: str, unit: str) -> tuple:
    """The first chunk of a streamed answer and the stream of all of them (the first replayed). A stream that
    ends before its first ``unit`` is an INVALID_RESPONSE; either way a failure closes ``response``."""
    try:
        first = next(chunks)
    except StopIteration:
        response.close()
        raise ProviderError(
            ErrorClass.INVALID_RESPONSE,
            f"the stream ended before its first {unit}",
            reason="empty",
            provider=provider,
            model=model,
        ) from None
    except Exception:
        response.close()
        raise
    return first, ClosingStream(first, chunks, response)


class ClosingStream:
    """The first chunk, then the rest. ``close()`` (called by whoever consumes it, also when it never
    started iterating) closes the HTTP response; so does the end of the iteration."""

    def __init__(self, first: tuple[bytes, dict[str, Any]], rest: Iterator, response: Any) -> None:
        self._first: tuple[bytes, dict[str, Any]] | None = first
        self._rest = rest
        self._response = response

    def __iter__(self) -> ClosingStream:
        return self

    def __next__(self) -> tuple[bytes, dict[str, Any]]:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self._response is None:
            raise StopIteration
        try:
            return next(self._rest)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()
