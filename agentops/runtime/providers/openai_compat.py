"""Any OpenAI-compatible chat-completions endpoint, through the official ``openai`` SDK.

One ``openai.OpenAI`` client per provider, built once and reused (its connection pool is what keeps the
guarded call cheap), with the SDK's own retries off (``max_retries=0``): the retry policy is ours. The
attempt timeout is passed per call. Every failure leaves as a classified ``ProviderError``.

Note on timeouts: the SDK (httpx) applies ``timeout`` to each phase — connect, each read, write, pool
wait — not to the call as a whole. A hung server is cut after ``timeout``; a server that trickles bytes
slower than the body needs but faster than ``timeout`` per chunk is not. The guard's request deadline is
checked between attempts and handlers.
"""

from __future__ import annotations

from typing import Any

import openai

from agentops.runtime.errors import ErrorClass, ProviderError, classify
from agentops.runtime.providers.base import LLMRequest, LLMResult


class OpenAICompatProvider:
    """Chat completions against ``base_url`` with ``api_key``."""

    def __init__(
        self,
        name: str,
        base_url: str | None,
        api_key: str,
        *,
        keep_raw: bool = False,
        default_headers: dict[str, str] | None = None,
        client: openai.OpenAI | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self.keep_raw = keep_raw
        self.client = client or openai.OpenAI(
            base_url=base_url, api_key=api_key or "unset", max_retries=0, default_headers=default_headers
        )

    def __repr__(self) -> str:
        return f"OpenAICompatProvider({self.name!r}, base_url={self.base_url!r})"

    def complete(self, request: LLMRequest, timeout: float) -> LLMResult:
        kwargs: dict[str, Any] = dict(request.extra) if request.extra else {}
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        try:
            response = self.client.chat.completions.create(
                model=request.model, messages=request.messages, timeout=timeout, **kwargs
            )
        except Exception as exc:
            raise classify(exc, provider=self.name, model=request.model) from exc
        return self._result(request, response)

    def _result(self, request: LLMRequest, response: Any) -> LLMResult:
        choices = getattr(response, "choices", None)
        if not choices:
            raise ProviderError(
                ErrorClass.INVALID_RESPONSE,
                "response has no choices",
                reason="malformed",
                provider=self.name,
                model=request.model,
            )
        choice = choices[0]
        message = choice.message
        tool_calls = None
        if getattr(message, "tool_calls", None):
            tool_calls = [call.model_dump() for call in message.tool_calls]
        usage = response.usage
        input_tokens = output_tokens = cached_tokens = 0
        if usage is not None:
            input_tokens = usage.prompt_tokens or 0
            output_tokens = usage.completion_tokens or 0
            details = getattr(usage, "prompt_tokens_details", None)
            cached_tokens = (getattr(details, "cached_tokens", None) or 0) if details is not None else 0
        return LLMResult(
            text=message.content or "",
            model=response.model or request.model,
            provider=self.name,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
            finish_reason=choice.finish_reason,
            tool_calls=tool_calls,
            raw=response.model_dump() if self.keep_raw else None,
        )
