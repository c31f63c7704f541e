"""A built-in offline provider: deterministic answers, configurable latency and fault rates.

Everything (demo, tests, benchmarks) can run without a network. Faults are drawn from a seeded RNG, so a
given seed and call sequence always fail the same way, and they raise the same ``ProviderError``\\ s the real
provider would (a latency longer than the attempt timeout becomes a ``Timeout``).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from agentops.runtime.errors import ErrorClass, ProviderError
from agentops.runtime.model_names import embedding_model
from agentops.runtime.providers.base import (
    EmbeddingsRequest,
    EmbeddingsResult,
    LLMRequest,
    LLMResult,
    estimate_prompt_tokens,
    estimate_tokens,
)
from agentops.runtime.semantic_text import features, hashed_vector, normalise

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


EMBEDDING_DEFAULT_WIDTH = 1536  # the width of models that are not OpenAI's (they accept ``dimensions``)


def embedding_width(model: str) -> tuple[int, bool]:
    """``(native width, accepts dimensions)`` of ``model``."""
    return embedding_model(model) or (EMBEDDING_DEFAULT_WIDTH, True)


# Words a real embeddings model puts close together: the simulated vectors treat each group as one word,
# so paraphrases with these synonyms land near each other (what a semantic cache's tests need).
SYNONYMS = {
    word: group[0]
    for group in (
        ("summarize", "summarise", "recap"),
        ("describe", "explain"),
        ("refund", "reimburse", "repay"),
        ("order", "purchase"),
        ("cancel", "stop", "terminate"),
        ("big", "large", "huge"),
        ("quick", "fast", "rapid"),
        ("reset", "change", "recover"),
        ("password", "passcode", "passphrase"),
        ("city", "town"),
        ("help", "assist"),
        ("buy", "acquire"),
    )
    for word in group
}


def simulated_embedding(model: str, item: Any, dimensions: int | None = None) -> list[float]:
    """A deterministic unit vector for ``item`` (a string or a list of token ids) on ``model``: float32
    values (so its base64 form decodes to exactly these floats), ``dimensions`` wide when asked (as OpenAI's
    text-embedding-3 models allow). A string behaves like a real model's: its words (``SYNONYMS`` as one),
    word pairs and character trigrams hashed into the width with the model as salt, so paraphrases are
    close and unrelated texts far apart; a token list is seeded from a hash of it (random) and cut to its
    first ``dimensions`` values, normalised again."""
    width, _ = embedding_width(model)
    if isinstance(item, str):
        canonical = " ".join(SYNONYMS.get(word, word) for word in normalise(item).split())
        # Hashed into the width asked for: a real model's vector is dense, so its first few values still
        # tell texts apart; a sparse hashed one cut to them would be mostly (or all) zeros.
        vector = hashed_vector(features(canonical), dimensions or width, salt=model.encode("utf-8"))
        values = vector.tolist() if vector.any() else [1.0] + [0.0] * (len(vector) - 1)
    else:
        seed = hashlib.sha256(f"{model}\n{json.dumps(item, ensure_ascii=False)}".encode()).digest()
        raw = random.Random(seed).randbytes(4 * width)
        values = [n / 2147483648.0 - 1.0 for n in struct.unpack(f"<{width}I", raw)]
    if dimensions:
        values = values[:dimensions]  # a no-op for a string: it was hashed into that width
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return float32([v / norm for v in values])


def float32(values: list[float]) -> list[float]:
    """``values`` rounded to float32, as embeddings travel."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


class SimulatedProvider:
    """Answers every request locally.

    ``latency`` seconds per call (plus up to ``latency_jitter`` more); ``fault_rates`` maps an error class
    (or its value) to the probability of raising it; ``retry_after`` goes on simulated rate limits.
    """

    gen_ai_provider = "agentops.simulated"  # the OpenTelemetry GenAI ``gen_ai.provider.name`` (no real API)

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
        self._wait_or_fail(request, timeout)
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

    def embed(self, request: EmbeddingsRequest, timeout: float) -> EmbeddingsResult:
        """Deterministic vectors (``simulated_embedding``), as floats; usage counted like ``complete``'s."""
        self._wait_or_fail(request, timeout)
        value = request.input
        items = list(value) if _is_batch(value) else [value]
        dimensions = request.extra.get("dimensions")
        data = [
            {"object": "embedding", "index": index, "embedding": simulated_embedding(request.model, item, dimensions)}
            for index, item in enumerate(items)
        ]
        tokens = sum(len(item) if isinstance(item, list) else estimate_tokens(item) for item in items)
        body = {
            "object": "list",
            "data": data,
            "model": request.model or self.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return EmbeddingsResult(model=body["model"], provider=self.name, raw=body, input_tokens=tokens)

    def _wait_or_fail(self, request: Any, timeout: float) -> None:
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

    def _error(self, error_class: ErrorClass, request: Any, message: str) -> ProviderError:
        return ProviderError(
            error_class,
            message,
            status=_FAULT_STATUS.get(error_class),
            retry_after=self.retry_after if error_class is ErrorClass.RATE_LIMIT else None,
            reason="malformed" if error_class is ErrorClass.INVALID_RESPONSE else "simulated",
            provider=self.name,
            model=request.model,
        )


def _is_batch(value: Any) -> bool:
    """A list of inputs (strings or token lists), not one list of token ids."""
    return isinstance(value, list) and any(not isinstance(item, int) for item in value)
