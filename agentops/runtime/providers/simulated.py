"""A built-in offline provider: deterministic answers, configurable latency and fault rates.

Everything (demo, tests, benchmarks) can run without a network. Faults are drawn from a seeded RNG, so a
given seed and call sequence always fail the same way, and they raise the same ``ProviderError``\\ s the real
provider would (a latency longer than the attempt timeout becomes a ``Timeout``).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Mapping

from agentops.runtime.errors import ErrorClass, ProviderError
from agentops.runtime.providers.base import LLMRequest, LLMResult, estimate_prompt_tokens, estimate_tokens

_FAULT_STATUS = {
    ErrorClass.RATE_LIMIT: 429,
    ErrorClass.SERVICE_UNAVAILABLE: 503,
    ErrorClass.AUTHENTICATION: 401,
    ErrorClass.BAD_REQUEST: 400,
}


def simulated_answer(request: LLMRequest) -> str:
    """The deterministic answer for a request: same prompt, same model → same text."""
    prompt = request.last_user_text().strip()
    digest = hashlib.sha256(f"{request.model}\n{prompt}".encode()).hexdigest()[:8]
    if request.operation == "classify":
        labels = ("positive", "negative", "neutral")
        return labels[int(digest, 16) % len(labels)]
    topic = " ".join(prompt.split()[:16]) or "your request"
    return f"Simulated answer from {request.model or 'simulated'} [{digest}] about: {topic}"


class SimulatedProvider:
    """Answers every request locally.

    ``latency`` seconds per call (plus up to ``latency_jitter`` more); ``fault_rates`` maps an error class
    (or its value) to the probability of raising it; ``retry_after`` goes on simulated rate limits.
    """

    def __init__(
        self,
        name: str = "simulated",
        *,
        latency: float = 0.0,
        latency_jitter: float = 0.0,
        fault_rates: Mapping[ErrorClass | str, float] | None = None,
        seed: int | None = 0,
        retry_after: float | None = None,
        answer: Callable[[LLMRequest], str] = simulated_answer,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.latency = latency
        self.latency_jitter = latency_jitter
        self.fault_rates = {ErrorClass(k): float(v) for k, v in (fault_rates or {}).items() if v}
        self.retry_after = retry_after
        self.answer = answer
        self.sleep = sleep
        self.calls = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def complete(self, request: LLMRequest, timeout: float) -> LLMResult:
        with self._lock:
            self.calls += 1
            draw = self._rng.random() if self.fault_rates else 1.0
            jitter = self._rng.random() * self.latency_jitter if self.latency_jitter else 0.0
        latency = self.latency + jitter
        if latency > timeout:
            self.sleep(timeout)
            raise self._error(ErrorClass.TIMEOUT, request, f"no answer within {timeout:.3f}s")
        if latency:
            self.sleep(latency)
        cumulative = 0.0
        for error_class, rate in self.fault_rates.items():
            cumulative += rate
            if draw < cumulative:
                raise self._error(error_class, request, f"simulated {error_class.value}")
        text = self.answer(request)
        output_tokens = estimate_tokens(text)
        if request.max_tokens is not None:
            output_tokens = min(output_tokens, request.max_tokens)
        return LLMResult(
            text=text,
            model=request.model or self.name,
            provider=self.name,
            input_tokens=estimate_prompt_tokens(request.messages),
            output_tokens=output_tokens,
            finish_reason="stop",
        )

    def _error(self, error_class: ErrorClass, request: LLMRequest, message: str) -> ProviderError:
        return ProviderError(
            error_class,
            message,
            status=_FAULT_STATUS.get(error_class),
            retry_after=self.retry_after if error_class is ErrorClass.RATE_LIMIT else None,
            reason="malformed" if error_class is ErrorClass.INVALID_RESPONSE else "simulated",
            provider=self.name,
            model=request.model,
        )
