"""Any OpenAI-compatible chat-completions endpoint, through the official ``openai`` SDK's client.

One ``openai.OpenAI`` client per provider, built once and reused (its connection pool is what keeps the
guarded call cheap), with the SDK's own retries off (``max_retries=0``): the retry policy is ours. Requests
go out through ``LeanTransport`` (lean_http.py): the SDK client's HTTP client, headers and exception
classes without its per-call request and response models (about half the CPU of a call). The attempt
timeout is passed per call. Every failure leaves as a classified ``ProviderError``.

Note on timeouts: the SDK (httpx) applies ``timeout`` to each phase — connect, each read, write, pool
wait — not to the call as a whole. A hung server is cut after ``timeout``; a server that trickles bytes
slower than the body needs but faster than ``timeout`` per chunk is not. The guard's request deadline is
checked between attempts and handlers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai

from agentops.runtime.errors import ErrorClass, ProviderError, classify
from agentops.runtime.model_names import output_cap_field
from agentops.runtime.providers.base import EmbeddingsRequest, EmbeddingsResult, LLMRequest, LLMResult, open_stream
from agentops.runtime.providers.lean_http import LeanTransport
from agentops.runtime.providers.responses_native import NATIVE_KEY, chat_chunks_of, chat_completion_of, native_body


class OpenAICompatProvider:
    """Chat completions against ``base_url`` with ``api_key``. ``speaks_responses``: a request that carries a
    Responses body (the gateway's ``/v1/responses``, ``extra["native"]``) goes to the provider's own
    ``/responses`` as it came instead (see responses_native.py)."""

    gen_ai_provider = "openai"  # the OpenTelemetry GenAI ``gen_ai.provider.name``: the API it speaks

    def __init__(
        self,
        name: str,
        base_url: str | None,
        api_key: str,
        *,
        keep_raw: bool = False,
        default_headers: dict[str, str] | None = None,
        client: openai.OpenAI | None = None,
        speaks_responses: bool = False,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self.keep_raw = keep_raw
        self.speaks_responses = speaks_responses
        self.client = client or openai.OpenAI(
            base_url=base_url, api_key=api_key or "unset", max_retries=0, default_headers=default_headers
        )
        self.transport = LeanTransport(self.client)

    def __repr__(self) -> str:
        return f"OpenAICompatProvider({self.name!r}, base_url={self.base_url!r})"

    def complete(self, request: LLMRequest, timeout: float) -> LLMResult:
        native = self._native(request)
        try:
            if native is not None:
                body = native_body(native, request.model, request.max_tokens, stream=False)
                content = self.transport.post("/responses", body, timeout).content
            else:
                # The body is parsed once with json (no SDK response models): fields the SDK does not know survive.
                content = self.transport.post("/chat/completions", self._body(request), timeout).content
        except Exception as exc:
            raise classify(exc, provider=self.name, model=request.model) from exc
        return self._result_from_body(
            request, content, native=native is not None, keep_raw=self.keep_raw or request.passthrough or bool(native)
        )

    def embed(self, request: EmbeddingsRequest, timeout: float) -> EmbeddingsResult:
        """``POST /embeddings`` with the request's body as it is; the answer's body is kept (and its bytes, to
        pass on unchanged). A body that is not a list of one embedding per input is ``InvalidResponse``."""
        try:
            content = self.transport.post("/embeddings", request.body(), timeout).content
            data = json.loads(content)
        except Exception as exc:
            raise classify(exc, provider=self.name, model=request.model) from exc
        items = data.get("data") if isinstance(data, dict) else None
        if (
            not isinstance(items, list)
            or len(items) != request.item_count
            or not all(isinstance(item, dict) and isinstance(item.get("embedding"), list | str) for item in items)
        ):
            raise ProviderError(
                ErrorClass.INVALID_RESPONSE,
                "the response body is not one embedding per input",
                reason="malformed",
                provider=self.name,
                model=request.model,
            )
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        tokens = usage.get("prompt_tokens")
        return EmbeddingsResult(
            model=str(data.get("model") or request.model),
            provider=self.name,
            raw=data,
            input_tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None,
            content=content,
        )

    def open_stream(self, request: LLMRequest, timeout: float) -> LLMResult:
        """Start a streamed completion and wait for its first chunk, so that every failure a retry or a
        fallback can still repair (status, connection, a hung or malformed start) is raised here, classified.
        The result's ``stream`` yields the chunks (the first one included); usage is always asked for."""
        native = self._native(request)
        if native is not None:
            path, body = "/responses", native_body(native, request.model, request.max_tokens, stream=True)
        else:
            path, body = "/chat/completions", self._body(request)
            body["stream"] = True
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        try:
            # The response left unread: the lines are parsed here as they arrive.
            response = self.transport.post(path, body, timeout, stream=True)
        except Exception as exc:
            raise classify(exc, provider=self.name, model=request.model) from exc
        chunks = self._chunks(request, response, native=native is not None)
        first, stream = open_stream(chunks, response, provider=self.name, model=request.model, unit="chunk")
        return LLMResult(
            text="",
            model=first[1].get("model") or request.model,
            provider=self.name,
            stream=stream,
        )

    def _native(self, request: LLMRequest) -> dict[str, Any] | None:
        """The Responses body to post natively, when this provider speaks Responses and the request has one."""
        native = request.extra.get(NATIVE_KEY) if request.extra else None
        return native if self.speaks_responses and isinstance(native, dict) else None

    def _body(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body of a chat completion: model, messages, our parameters, ``extra_body`` merged in."""
        body: dict[str, Any] = {"model": request.model, "messages": request.messages}
        for name, value in self._kwargs(request).items():
            if name == "extra_body":
                body.update(value)
            else:
                body[name] = value
        return body

    def _kwargs(self, request: LLMRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(request.extra) if request.extra else {}
        kwargs.pop(NATIVE_KEY, None)  # a Responses body: only for a provider that speaks Responses
        if request.max_tokens is not None and "max_completion_tokens" not in kwargs:
            # Reasoning models refuse ``max_tokens``: the same cap goes by the name the model accepts.
            kwargs[output_cap_field(request.model)] = request.max_tokens
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        return kwargs

    def _chunks(
        self, request: LLMRequest, response: Any, native: bool = False
    ) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """``(payload, chunk)`` per SSE ``data:`` line until ``[DONE]`` (``native``: a Responses event stream,
        as chat chunks); failures leave classified."""
        lines = self._lines(request, response)
        if native:
            lines = chat_chunks_of((event for _, event in lines), request.model)
        try:
            for payload, chunk in lines:
                if "error" in chunk and "choices" not in chunk:
                    error = chunk["error"] if isinstance(chunk["error"], dict) else {}
                    raise ProviderError(
                        ErrorClass.SERVICE_UNAVAILABLE,
                        str(error.get("message") or "error in the stream"),
                        reason="stream_error",
                        provider=self.name,
                        model=request.model,
                    )
                yield payload, chunk
        except ProviderError:
            raise
        except Exception as exc:
            raise classify(exc, provider=self.name, model=request.model) from exc

    def _lines(self, request: LLMRequest, response: Any) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """``(payload, object)`` per SSE ``data:`` line until ``[DONE]``."""
        try:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments, "event:" lines
                payload = line[5:].strip()
                if payload == "[DONE]":
                    return
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    raise ProviderError(
                        ErrorClass.INVALID_RESPONSE,
                        "a stream chunk is not JSON",
                        reason="malformed",
                        provider=self.name,
                        model=request.model,
                    ) from None
                if not isinstance(chunk, dict):
                    raise ProviderError(
                        ErrorClass.INVALID_RESPONSE,
                        "a stream chunk is not an object",
                        reason="malformed",
                        provider=self.name,
                        model=request.model,
                    )
                yield payload.encode(), chunk
        except ProviderError:
            raise
        except Exception as exc:
            raise classify(exc, provider=self.name, model=request.model) from exc

    def _result_from_body(
        self, request: LLMRequest, body: bytes, native: bool = False, *, keep_raw: bool = True
    ) -> LLMResult:
        try:
            data = json.loads(body)
            if native:  # a Responses object, read as the chat completion it amounts to
                data = chat_completion_of(data, request.model) if isinstance(data, dict) and "output" in data else {}
            choice = data["choices"][0]
            message = choice["message"]
            if not isinstance(message, dict):
                raise TypeError(message)
        except (ValueError, KeyError, IndexError, TypeError):
            raise ProviderError(
                ErrorClass.INVALID_RESPONSE,
                "the response body is not a chat completion",
                reason="malformed",
                provider=self.name,
                model=request.model,
            ) from None
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return LLMResult(
            text=message.get("content") or "",
            model=data.get("model") or request.model,
            provider=self.name,
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
            finish_reason=choice.get("finish_reason"),
            tool_calls=message.get("tool_calls") or None,
            function_call=message.get("function_call") if isinstance(message.get("function_call"), dict) else None,
            raw=data if keep_raw else None,
        )
