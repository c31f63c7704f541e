"""``guarded_embeddings``: one guarded embeddings call, beside ``guarded_llm`` and sharing its parts.

    cache (exact: model + input + dimensions + encoding) → budget reserve (the input tokens, no output) →
    fallback chain (breaker, retry, timeout; primary → backup models, no rules, no human) → settle / release
    → usage record → cache store

with the same metrics and log line as a chat call (operation ``embeddings`` unless the caller names
another) and one ``agentops.embeddings {operation}`` span with an ``embeddings {model}`` CLIENT span under it per
attempt (DESIGN.md §10, ``observability/genai.py``). A refused budget is never downgraded to
another model nor handed to a human: another model's vectors live in another space, and no reviewer can
write a vector, so ``BudgetExceeded`` is raised. Pure Python: no Django.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentops.runtime.cache import cache_key
from agentops.runtime.call_outcome import record_failure
from agentops.runtime.fallback import ChainContext, Hop, run_chain
from agentops.runtime.guard import GuardDeps, _finish, _ms, _quietly, _store, call_span
from agentops.runtime.protocols import ALLOW_ALL
from agentops.runtime.providers.base import EmbeddingsRequest, EmbeddingsResult
from agentops.runtime.results import GuardResult
from agentops.runtime.retry import RetryBudget
from agentops.runtime.routing import Route
from agentops.runtime.timeouts import Deadline
from agentops.runtime.tokens import text_tokens

# An answer larger than this is not cached: 3072 floats are ~60 KB as JSON, and the memory tier keeps 1000 entries.
CACHE_MAX_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class EmbeddingsAnswer:
    """A guarded embeddings call's outcome: ``result`` (``raw`` is the answer's body, ``input_tokens`` what
    was charged) and ``content``, the provider's own bytes when the body can be sent on as it came."""

    result: GuardResult
    content: bytes | None = None


def item_tokens(value: Any, model: str) -> list[int]:
    """Tokens of each input of an embeddings ``input`` on ``model``: a token list counts its ids; a string is
    counted with the model's tokenizer (exact for OpenAI's models), else as its UTF-8 length (a bound)."""
    if isinstance(value, str):
        return [text_tokens(value, model)]
    if not isinstance(value, list):
        return [0]
    if value and all(isinstance(item, int) for item in value):
        return [len(value)]
    return [len(item) if isinstance(item, list) else text_tokens(str(item), model) for item in value]


def input_token_bound(value: Any, models: Sequence[str]) -> int:
    """The most input tokens any of ``models`` (a fallback chain) can charge for ``value``."""
    return max((sum(item_tokens(value, model)) for model in dict.fromkeys(models or [""])), default=0)


def embeddings_cache_key(request: EmbeddingsRequest) -> str:
    """Everything that shapes the vectors (model, input, dimensions, encoding, any other upstream field) and
    the tenant (``metadata["cache_scope"]``); ``user`` only labels the caller."""
    parts = {
        "model": request.model,
        "input": request.input,
        "extra": {name: value for name, value in request.extra.items() if name != "user"},
    }
    scope = request.metadata.get("cache_scope")
    if scope is not None:
        parts["scope"] = scope
    return cache_key("embeddings", parts)


def guarded_embeddings(
    request: EmbeddingsRequest,
    *,
    deps: GuardDeps,
    route: Route,
    cache: bool = True,
    deadline: Deadline | None = None,
    defer: Callable[[Callable[[], None]], None] | None = None,
) -> EmbeddingsAnswer:
    """Answer ``request`` through the pipeline above. ``metadata["prompt_tokens_estimate"]`` is the input bound
    to reserve (computed here when missing); ``defer`` receives the settle and log line as for ``guarded_llm``.
    Raises ``BudgetExceeded``, ``BudgetUnavailable`` or ``FallbackExhausted``."""
    start = deps.clock()
    cfg = deps.config.get()
    return call_span(
        f"agentops.embeddings {request.operation}",
        request,
        lambda span: _run(request, deps, cfg, route, cache, deadline, defer, start, span),
        defer=defer,
    )


def _run(
    request: EmbeddingsRequest,
    deps: GuardDeps,
    cfg: Any,
    route: Route,
    cache: bool,
    deadline: Deadline | None,
    defer: Callable[[Callable[[], None]], None] | None,
    start: float,
    span: Any,
) -> EmbeddingsAnswer:
    recording = span.is_recording()
    models = [target.model for target in route.chain] or [request.model]
    bound = request.metadata.get("prompt_tokens_estimate")
    if bound is None:
        bound = input_token_bound(request.input, [request.model, *models])
    key = embeddings_cache_key(request) if cache and deps.cache is not None else None
    if key is not None:
        hit = deps.cache.get(key)
        if hit is not None:
            value = hit.value
            # A hit costs nothing: zero tokens are recorded (the original count stays in the cache entry).
            result = GuardResult(
                text="",
                model=value["model"],
                provider=value["provider"],
                handler="cache",
                operation=request.operation,
                hops=(Hop("cache", "ok", target=hit.source),),
                cache_hit=True,
                duration_ms=_ms(deps, start),
                raw=value["body"],
            )
            _finish(deps, cfg, request, result, span, recording, outcome="cache_hit", reservation=None, defer=defer)
            return EmbeddingsAnswer(result)

    meta = {
        **request.metadata,
        "operation": request.operation,
        "model": models[0],
        "models": models,  # priced at the dearest model that may answer
        "estimated_input_tokens": bound,
        "estimated_output_tokens": 0,
        "estimated_tokens": bound,
    }
    try:
        reservation = None if deps.budget is ALLOW_ALL else deps.budget.reserve(meta)
    except BaseException as exc:
        record_failure(
            request, exc, None, duration_ms=_ms(deps, start), calls=deps.calls, span=span, recording=recording
        )
        raise

    ctx = ChainContext(
        config=cfg,
        providers=deps.providers,
        deadline=deadline or Deadline.after(cfg.timeouts.request, clock=deps.clock),
        retry_budget=RetryBudget(cfg.retry.budget),
        breakers=deps.breakers,
        timeout_for=deps.adaptive.timeout_for if deps.adaptive is not None else None,
        record_latency=deps.latency.record if deps.latency is not None else None,
        escalator=None,
        sleep=deps.sleep,
        clock=deps.clock,
        rng=deps.rng,
    )
    try:
        chain = run_chain(request, Route(route.operation, route.chain, use_rules=False, use_human=False), ctx)
    except BaseException as exc:
        _quietly(deps.budget.release, reservation, what="releasing the reservation")
        record_failure(
            request, exc, ctx, duration_ms=_ms(deps, start), calls=deps.calls, span=span, recording=recording
        )
        raise

    embedded: EmbeddingsResult = chain.result  # type: ignore[assignment]
    result = GuardResult(
        text="",
        model=embedded.model,
        provider=embedded.provider,
        handler=chain.handler,
        operation=request.operation,
        # Without the provider's usage the call is charged the bound it reserved (never more).
        input_tokens=embedded.input_tokens if embedded.input_tokens is not None else bound,
        attempts=chain.attempts,
        hops=tuple(chain.hops),
        duration_ms=_ms(deps, start),
        error_class=ctx.errors_seen[-1].error_class.value if ctx.errors_seen else None,
        upstream_ms=round((ctx.upstream_seconds + sum(sum(hop.waits) for hop in chain.hops)) * 1000.0, 3),
        raw=embedded.raw,
    )
    outcome = "success" if chain.handler == "primary" else "fallback"
    _finish(deps, cfg, request, result, span, recording, outcome=outcome, reservation=reservation, defer=defer)
    if key is not None:
        size = len(embedded.content) if embedded.content is not None else len(json.dumps(embedded.raw))
        if size <= CACHE_MAX_BYTES:
            entry = {"model": embedded.model, "provider": embedded.provider, "body": embedded.raw}
            _quietly(_store, deps.cache, key, entry, what="storing the answer in the cache")
    return EmbeddingsAnswer(result, embedded.content)
