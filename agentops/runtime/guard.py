"""``guarded_llm``: one guarded LLM call through the whole pipeline of DESIGN.md §4.

    journal replay → cache (cacheable operations only) → budget reserve → fallback chain (breaker, retry,
    timeout, validation, rules, human) → settle / release → usage record → cache store

with the Prometheus metrics of §10, one ``agentops.llm {operation}`` span (a ``chat {model}`` CLIENT span
under it for every attempt at a provider, see ``observability/genai.py``) and one JSON log line
(``event="llm.call"``) per call. Everything the pipeline talks to arrives in ``GuardDeps``, so the Django
side, the gateway, the Celery workers and the tests all assemble the same pipeline from their own parts.

Hot path (breaker closed, not cacheable, first attempt answers): no Redis round trip on the caller's thread.
The breaker answers from its recent "closed, no failures" observation (``closed_cache_seconds``, see
``breaker.py``); the latency sample for adaptive timeouts is queued and written in batches by a background
thread (``LatencyRecorder``); the adaptive timeout itself is cached in-process by ``AdaptiveTimeouts``. A
cacheable miss adds one Redis round trip (GET+PTTL); the answer's Redis SET is done by the cache's writer
thread. Metric children are looked up once per label set (``_child``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace

from agentops.observability import genai
from agentops.observability.metrics import LLM_CALLS, LLM_TOKENS, RESPONSE_SECONDS
from agentops.runtime.breaker import BreakerRegistry
from agentops.runtime.cache import TwoLevelCache, cache_key
from agentops.runtime.call_outcome import answered_attributes, log_answered, metric_child, record_failure
from agentops.runtime.config import ConfigSource, RuntimeConfig
from agentops.runtime.fallback import ChainContext, Hop, run_chain
from agentops.runtime.latency import LatencyRecorder
from agentops.runtime.protocols import (
    ALLOW_ALL,
    BudgetExceeded,
    BudgetGate,
    CallCounter,
    Escalator,
    HandoffOutcome,
    Journal,
    UsageSink,
)
from agentops.runtime.providers.base import LLMRequest, LLMResult, Provider
from agentops.runtime.results import GuardResult, from_cache_entry, to_cache_entry
from agentops.runtime.retry import RetryBudget
from agentops.runtime.routing import Route
from agentops.runtime.timeouts import Deadline
from agentops.runtime.tokens import UnboundedInput, prompt_token_bound_for_models, text_tokens

if TYPE_CHECKING:
    from agentops.runtime.semantic_cache import SemanticCache
    from agentops.runtime.timeouts import AdaptiveTimeouts

logger = logging.getLogger(__name__)
log = structlog.get_logger("agentops.llm")

T = TypeVar("T")
_stdlib_log = logging.getLogger("agentops.llm")  # the logger structlog's stdlib factory hands ``log`` to
tracer = trace.get_tracer("agentops.runtime")

MODEL_HANDLERS_PREFIXES = ("primary", "backup")


@dataclass
class GuardDeps:
    """Everything ``guarded_llm`` talks to. Build once per process and reuse."""

    config: ConfigSource
    providers: Mapping[str, Provider]
    breakers: BreakerRegistry | None = None
    cache: TwoLevelCache | None = None  # for the "llm" spec
    adaptive: AdaptiveTimeouts | None = None
    budget: BudgetGate = ALLOW_ALL
    escalator: Escalator | None = None
    usage: UsageSink | None = None
    journal: Journal | None = None
    calls: CallCounter | None = None  # every call's outcome, for the error-rate alert (runs and gateway alike)
    semantic: SemanticCache | None = None  # answers by meaning on the routes that opt in (semantic_cache.py)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random | None = None
    record_latency_in_background: bool = True
    latency: LatencyRecorder | None = field(default=None)

    def __post_init__(self) -> None:
        if self.latency is None and self.adaptive is not None:
            self.latency = LatencyRecorder(self.adaptive, background=self.record_latency_in_background)


def make_breaker_registry(redis_client: Any, config: ConfigSource, **kwargs: Any) -> BreakerRegistry:
    """A ``BreakerRegistry`` whose thresholds follow ``config`` (changes apply without a restart)."""
    return BreakerRegistry(redis_client, lambda name: config.get().breaker_settings_for(name), **kwargs)


def llm_cache_key(request: LLMRequest) -> str:
    """The cache key of a request: everything that shapes the answer, nothing that does not (metadata) —
    except ``metadata["cache_scope"]``, which keeps one tenant's answers from another (the gateway sets it
    to the agent)."""
    parts = {
        "operation": request.operation,
        "model": request.model,
        "messages": list(request.messages),
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "extra": dict(request.extra),
    }
    scope = request.metadata.get("cache_scope")
    if scope is not None:
        parts["scope"] = scope
    return cache_key("llm", parts)


def guarded_llm(
    request: LLMRequest,
    *,
    deps: GuardDeps,
    deadline: Deadline | None = None,
    cache: bool | None = None,
    journal_key: str | None = None,
    route: Route | None = None,
    defer: Callable[[Callable[[], None]], None] | None = None,
) -> GuardResult:
    """Answer ``request`` through the guard pipeline.

    ``deadline`` bounds the whole call (default: the layered ``request`` timeout); ``cache`` overrides
    whether this operation is cacheable; ``journal_key`` (``run:<id>:step:<seq>``) makes the call replay a
    recorded result; ``route`` replaces the router's choice (the gateway resolves model names itself).
    ``defer`` receives the settle (or usage record) and the log line of an answered call instead of running
    them: the gateway sends the answer first and runs them right after (the reservation holds the estimate
    until then, so no concurrent call can pass a limit meanwhile).
    A ``request.stream`` answer comes back with ``stream`` set: iterate it to the end or ``close()`` it.
    Raises ``BudgetExceeded`` (refused, no escalation), ``HumanPending`` (handed to a
    human, suspend), ``HumanRejected`` or ``FallbackExhausted`` (nothing answered, no handoff).
    """
    start = deps.clock()
    cfg = deps.config.get()
    if request.max_tokens is None:  # the output cap reserved is the cap sent upstream: the charge stays bounded
        request = dataclasses.replace(request, max_tokens=cfg.default_max_tokens)
    if journal_key is not None and deps.journal is not None:
        recorded = deps.journal.lookup(journal_key)
        if recorded is not None:
            return GuardResult.from_dict(recorded, replayed=True)

    return call_span(
        f"agentops.llm {request.operation}",
        request,
        lambda span: _run_in_span(request, deps, cfg, start, span, deadline, cache, journal_key, route, defer),
        defer=defer,
        ends_later=lambda result: result.stream is not None,  # a stream's span ends with the stream
    )


def call_span(
    name: str,
    request: Any,
    body: Callable[[Any], T],
    *,
    defer: Callable[[Callable[[], None]], None] | None,
    ends_later: Callable[[T], bool] = lambda result: False,
) -> T:
    """``body(span)`` inside the guarded call's span (chat or embeddings), current for everything it does.

    What ``tracer.start_as_current_span`` does (same exception recording and status as ``trace.use_span``),
    without its two generator-based context managers: ~10 µs less per call. The span stays open past the
    return when ``ends_later(result)`` says the result ends it (a stream), or until the deferred settle,
    which puts the priced cost on it, has run."""
    span = tracer.start_span(name, attributes=guard_attributes(request))
    token = otel_context.attach(trace.set_span_in_context(span))
    ended_later = False
    try:
        result = body(span)
        if ends_later(result):
            ended_later = True
        elif defer is not None:
            defer(span.end)
            ended_later = True
        return result
    except Exception as exc:
        if span.is_recording():
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        otel_context.detach(token)
        if not ended_later:
            span.end()


def guard_attributes(request: Any) -> dict[str, Any]:
    """The guarded call's span attributes at its start (ours; the ``gen_ai.*`` ones are on the attempts)."""
    metadata = request.metadata
    attributes: dict[str, Any] = {"agentops.operation": request.operation}
    if request.model:
        attributes["agentops.request.model"] = request.model
    session = metadata.get("session_id", metadata.get("session"))
    if session:
        attributes[genai.CONVERSATION] = str(session)
    if metadata.get("step") is not None:  # a run's step
        attributes["agentops.step"] = int(metadata["step"])
    if metadata.get("source"):
        attributes["agentops.source"] = str(metadata["source"])
    return attributes


def _run_in_span(
    request: LLMRequest,
    deps: GuardDeps,
    cfg: RuntimeConfig,
    start: float,
    span: Any,
    deadline: Deadline | None,
    cache: bool | None,
    journal_key: str | None,
    route: Route | None = None,
    defer: Callable[[Callable[[], None]], None] | None = None,
) -> GuardResult:
    recording = span.is_recording()

    cacheable = deps.cache is not None and (
        cache if cache is not None else request.operation in cfg.cacheable_operations
    )
    key = None
    if cacheable:
        try:
            key = llm_cache_key(request)
        except (TypeError, ValueError):  # a message that is not JSON: simply not cacheable
            logger.warning("request for %s is not JSON-serialisable; not cached", request.operation)
    if key is not None:
        hit = deps.cache.get(key)
        if hit is not None:
            result = from_cache_entry(hit.value, request, hit.source, _ms(deps, start))
            _finish(deps, cfg, request, result, span, recording, outcome="cache_hit", reservation=None, defer=defer)
            return _journaled(deps, journal_key, result)

    if route is None:
        route = cfg.router.route_for(request.operation, request.model or None)
    probe = deps.semantic.lookup(request, route, deps) if key is not None and deps.semantic is not None else None
    if probe is not None and probe.hit is not None:
        result = probe.result(request, _ms(deps, start))
        _finish(deps, cfg, request, result, span, recording, outcome="cache_hit", reservation=None, defer=defer)
        return _journaled(deps, journal_key, result)
    if recording and not request.model and route.chain:
        span.set_attribute("agentops.request.model", route.chain[0].model)
    try:
        reservation, route, escalated = _reserve(deps, cfg, request, route)
    except BaseException as exc:
        record_failure(
            request, exc, None, duration_ms=_ms(deps, start), calls=deps.calls, span=span, recording=recording
        )
        raise
    if escalated is not None:
        _finish(deps, cfg, request, escalated, span, recording, outcome="human", reservation=None)
        return _journaled(deps, journal_key, escalated)

    if deadline is None:
        deadline = Deadline.after(cfg.timeouts.request, clock=deps.clock)
    latency = deps.latency
    ctx = ChainContext(
        config=cfg,
        providers=deps.providers,
        deadline=deadline,
        retry_budget=RetryBudget(cfg.retry.budget),
        breakers=deps.breakers,
        timeout_for=deps.adaptive.timeout_for if deps.adaptive is not None else None,
        record_latency=latency.record if latency is not None else None,
        escalator=deps.escalator if cfg.use_human else None,
        sleep=deps.sleep,
        clock=deps.clock,
        rng=deps.rng,
    )
    try:
        chain = run_chain(request, route, ctx)
    except BaseException as exc:
        _quietly(deps.budget.release, reservation, what="releasing the reservation")
        record_failure(
            request, exc, ctx, duration_ms=_ms(deps, start), calls=deps.calls, span=span, recording=recording
        )
        raise

    llm: LLMResult = chain.result
    last = ctx.errors_seen[-1].error_class.value if ctx.errors_seen else None
    upstream_ms = round((ctx.upstream_seconds + sum(sum(hop.waits) for hop in chain.hops)) * 1000.0, 3)
    if chain.handler == "primary":
        outcome = "success"
    elif chain.handler == "human":
        outcome = "human"
    else:
        outcome = "fallback"
    if llm.stream is not None:
        opened = GuardResult(
            text="",
            model=llm.model,
            provider=llm.provider,
            handler=chain.handler,
            operation=request.operation,
            attempts=chain.attempts,
            hops=tuple(chain.hops),
            duration_ms=_ms(deps, start),
            error_class=last,
            upstream_ms=upstream_ms,
        )
        stream = GuardedStream(
            llm.stream, request, opened, deps, cfg, span, reservation, outcome, start, attempt_span=ctx.stream_span
        )
        return dataclasses.replace(opened, stream=stream)
    result = GuardResult(
        text=llm.text,
        model=llm.model,
        provider=llm.provider,
        handler=chain.handler,
        operation=request.operation,
        input_tokens=llm.input_tokens,
        output_tokens=llm.output_tokens,
        cached_tokens=llm.cached_tokens,
        attempts=chain.attempts,
        hops=tuple(chain.hops),
        duration_ms=_ms(deps, start),
        finish_reason=llm.finish_reason,
        tool_calls=llm.tool_calls,
        error_class=last,
        upstream_ms=upstream_ms,
        raw=llm.raw,
    )
    _finish(deps, cfg, request, result, span, recording, outcome=outcome, reservation=reservation, defer=defer)
    if key is not None and chain.handler.startswith(MODEL_HANDLERS_PREFIXES):
        _quietly(_store, deps.cache, key, to_cache_entry(result), what="storing the answer in the cache")
    if probe is not None:
        result = probe.finish(result, store=chain.handler.startswith(MODEL_HANDLERS_PREFIXES), defer=defer)
    return _journaled(deps, journal_key, result)


class GuardedStream:
    """A streamed answer on its way through: iterate ``(payload, chunk)`` pairs (the provider's SSE
    ``data:`` bytes and their parsed chunk). Tokens are counted as chunks pass; when the stream ends — fully,
    by an upstream failure, or by ``close()`` (the client went away) — the reservation is settled exactly
    once with the usage the provider reported or, without one, the counted tokens (the rest of the hold is
    released), and the call's metrics, span and log line are emitted."""

    def __init__(
        self,
        source: Any,
        request: LLMRequest,
        opened: GuardResult,
        deps: GuardDeps,
        cfg: RuntimeConfig,
        span: Any,
        reservation: Any,
        outcome: str,
        start: float,
        attempt_span: Any = None,
    ) -> None:
        self._source = source
        self._attempt_span = attempt_span  # the ``chat {model}`` span of the attempt that opened the stream
        self._request = request
        self._opened = opened
        self._deps = deps
        self._cfg = cfg
        self._span = span
        self._reservation = reservation
        self._outcome = outcome
        self._start = start
        self._done = False
        self.usage: dict[str, Any] | None = None
        self.output_parts: list[str] = []  # counted only when the upstream sends no usage
        self.finish_reason: str | None = None
        self.model = opened.model
        self.result: GuardResult | None = None  # the settled call, once the stream ended

    def __iter__(self) -> GuardedStream:
        return self

    def __next__(self) -> tuple[bytes, dict[str, Any]]:
        if self._done:
            raise StopIteration
        try:
            payload, chunk = next(self._source)
        except StopIteration:
            self._end(self._outcome)
            raise
        except BaseException as exc:
            self._end("error", exc)
            raise
        self._count(chunk)
        return payload, chunk

    def close(self) -> None:
        """Stop early (the client disconnected): the upstream response is closed and what was produced so
        far is settled."""
        if self._done:
            return
        closer = getattr(self._source, "close", None)
        if closer is not None:
            _quietly(closer, what="closing the upstream stream")
        self._end("disconnected")

    def _count(self, chunk: Mapping[str, Any]) -> None:
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        if chunk.get("model"):
            self.model = chunk["model"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                self.output_parts.append(content)
            legacy = delta.get("function_call")
            for call in [*(delta.get("tool_calls") or ()), *([{"function": legacy}] if legacy else [])]:
                function = call.get("function") or {}
                self.output_parts += [function.get("name") or "", function.get("arguments") or ""]
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def _end(self, outcome: str, error: BaseException | None = None) -> None:
        self._done = True
        usage = self.usage or {}
        details = usage.get("prompt_tokens_details") or {}
        if usage:
            input_tokens = int(usage.get("prompt_tokens") or 0)
            output_tokens = int(usage.get("completion_tokens") or 0)
        else:  # no usage from upstream (or the stream stopped early): what was counted
            # Charged at the bounds the reservation held (never more than it), the output counted as the
            # model's tokenizer does, else as UTF-8 bytes, and never past the cap that was sent.
            input_tokens = self._request.metadata.get("prompt_tokens_estimate") or _prompt_bound(
                self._request, self.model
            )
            output_tokens = text_tokens("".join(self.output_parts), self.model)
            if self._request.max_tokens is not None:
                output_tokens = min(output_tokens, self._request.max_tokens)
        result = dataclasses.replace(
            self._opened,
            model=self.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, Mapping) else 0,
            finish_reason=self.finish_reason,
            duration_ms=_ms(self._deps, self._start),
            error_class=type(error).__name__ if error is not None else self._opened.error_class,
        )
        self.result = result
        span = self._span
        self._end_attempt(result, error)
        try:
            _finish(
                self._deps,
                self._cfg,
                self._request,
                result,
                span,
                span.is_recording(),
                outcome=outcome,
                reservation=self._reservation,
            )
        finally:
            if error is not None and span.is_recording():
                span.record_exception(error)
                span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.end()

    def _end_attempt(self, result: GuardResult, error: BaseException | None) -> None:
        attempt = self._attempt_span
        if attempt is None:
            return
        try:
            if attempt.is_recording():
                text = "".join(self.output_parts) if genai.capture_content() else ""
                genai.answered(attempt, dataclasses.replace(result, text=text))
                if error is not None:
                    kind = getattr(error, "error_class", None)
                    genai.failed(attempt, getattr(kind, "value", None) or type(error).__name__, error)
        finally:
            attempt.end()


# --- pipeline steps ------------------------------------------------------------------------------


def _reserve(
    deps: GuardDeps, cfg: RuntimeConfig, request: LLMRequest, route: Route
) -> tuple[Any, Route, GuardResult | None]:
    """Reserve the estimate: ``(handle, route to run, None)``. Refused: try the policy's cheaper model
    (its route is returned), then escalate (``(None, route, the human's result)``) or raise."""
    if deps.budget is ALLOW_ALL:
        return None, route, None
    models = [target.model for target in route.chain] or [request.model]
    # An upper bound of what any model of the chain can charge for the prompt (the gateway names its own,
    # which counts the request's tool definitions too).
    prompt = request.metadata.get("prompt_tokens_estimate") or prompt_token_bound_for_models(
        request.messages, models, tools=request.extra.get("tools") or request.extra.get("functions")
    )
    completion = request.max_tokens if request.max_tokens is not None else cfg.default_max_tokens
    meta: dict[str, Any] = {
        **request.metadata,
        "operation": request.operation,
        "model": route.chain[0].model if route.chain else request.model,
        # Every model that may answer on this reservation: it is priced at the dearest (a backup may answer).
        "models": models,
        "estimated_input_tokens": prompt,
        "estimated_output_tokens": completion,
        "estimated_tokens": prompt + completion,
    }
    try:
        return deps.budget.reserve(meta), route, None
    except BudgetExceeded as exc:
        refused = exc
    if refused.cheaper_model and meta["models"] != [refused.cheaper_model]:
        cheaper = cfg.router.route_for(request.operation, refused.cheaper_model)
        # Only the cheaper model: falling back to the model the budget just refused would pass its limit.
        cheaper = Route(cheaper.operation, cheaper.chain[:1], cheaper.use_rules, cheaper.use_human)
        try:
            return (
                deps.budget.reserve({**meta, "model": refused.cheaper_model, "models": [refused.cheaper_model]}),
                cheaper,
                None,
            )
        except BudgetExceeded as exc:
            refused = exc
    escalate = cfg.escalate_budget_exceeded if refused.escalate is None else refused.escalate
    if escalate and deps.escalator is not None:
        # The refusal is the one "hop": the reviewer sees which budget blocked and by how much.
        refusal = Hop("budget", "refused", target=refused.budget, reason=refused.message)
        outcome: HandoffOutcome = deps.escalator.handoff(request, [refusal], "budget_exceeded")
        return (
            None,
            route,
            GuardResult(
                text=outcome.text,
                model="human",
                provider="human",
                handler="human",
                operation=request.operation,
                attempts=1,
                hops=(refusal, Hop("human", "answered", target=outcome.reviewer, attempts=1, reason="budget_exceeded")),
                finish_reason="human",
                raw={"escalation_id": outcome.escalation_id, "reviewer": outcome.reviewer},
            ),
        )
    raise refused


def _finish(
    deps: GuardDeps,
    cfg: RuntimeConfig,
    request: LLMRequest,
    result: GuardResult,
    span: Any,
    recording: bool,
    *,
    outcome: str,
    reservation: Any,
    defer: Callable[[Callable[[], None]], None] | None = None,
) -> None:
    """Settle, record usage, emit metrics, span attributes and the log line of a call that answered (the
    settle and the log line through ``defer`` when given)."""
    if reservation is not None or deps.usage is not None:
        usage = {
            **request.metadata,
            "operation": request.operation,
            "model": result.model,
            # The names a price may be listed under besides the answered one (budgets match the most specific).
            "requested_model": request.model,
            "route_model": _route_model(result),
            "provider": result.provider,
            "handler": result.handler,
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
            "cached_tokens": result.cached_tokens,
            "cache_hit": result.cache_hit,
            "attempts": result.attempts,
            "duration_ms": result.duration_ms,
        }
        # The answer exists and was paid for: a failing ledger must not lose it. An unsettled reservation is a
        # lease that the budgets side reclaims (DESIGN.md §7); the failure is logged.
        settle = (deps.budget.settle, reservation, usage) if reservation is not None else (deps.usage.record, usage)
        if defer is None:
            _settle(span, *settle)
        else:
            defer(lambda: _settle(span, *settle))

    operation = request.operation
    metric_child(LLM_CALLS, operation, outcome).inc()
    if deps.calls is not None:
        deps.calls.count(outcome)
    metric_child(RESPONSE_SECONDS, operation).observe(result.duration_ms / 1000.0)
    if result.input_tokens:
        metric_child(LLM_TOKENS, result.model, "input").inc(result.input_tokens)
    if result.output_tokens:
        metric_child(LLM_TOKENS, result.model, "output").inc(result.output_tokens)
    if result.cached_tokens:
        metric_child(LLM_TOKENS, result.model, "cached").inc(result.cached_tokens)
    if recording:
        span.set_attributes(answered_attributes(result, outcome, reservation))
    if not _stdlib_log.isEnabledFor(logging.INFO):  # structlog would build the whole event first
        return
    if defer is not None:
        defer(lambda: log_answered(request, result, outcome, span))
    else:
        log_answered(request, result, outcome, span)


def _settle(span: Any, fn: Callable[..., Any], *args: Any) -> None:
    """Settle (or record) an answered call; the cost the ledger priced goes on the call's span."""
    try:
        outcome = fn(*args)
    except Exception:
        logger.exception("guarded call: settling the call failed")
        return
    cost = outcome.get("cost_usd") if isinstance(outcome, Mapping) else getattr(outcome, "cost_usd", None)
    if cost is not None and span.is_recording():
        span.set_attribute(genai.COST_USD, float(cost))


def _prompt_bound(request: LLMRequest, model: str) -> int:
    """The prompt's bound for charging a stream that brought no usage (a part with no known bound: its bytes)."""
    try:
        return prompt_token_bound_for_models(request.messages, [model])
    except UnboundedInput:
        return len(json.dumps(list(request.messages), default=str).encode())


def _route_model(result: GuardResult) -> str:
    """The model of the route target that answered (the hop's target is ``provider:model``)."""
    for hop in reversed(result.hops):
        if hop.outcome == "ok" and hop.target and hop.handler not in ("rules", "human"):
            return hop.target.partition(":")[2]
    return ""


def _quietly(fn: Callable[..., Any], *args: Any, what: str) -> None:
    try:
        fn(*args)
    except Exception:
        logger.exception("guarded call: %s failed", what)


def _store(cache: Any, key: str, value: dict[str, Any]) -> None:
    """The answer into the cache; the Redis write off the caller's thread when the cache can do that."""
    if isinstance(cache, TwoLevelCache):
        cache.set(key, value, background=True)
    else:
        cache.set(key, value)


def _journaled(deps: GuardDeps, key: str | None, result: GuardResult) -> GuardResult:
    if key is not None and deps.journal is not None:
        deps.journal.record(key, result.to_dict())
    return result


def _ms(deps: GuardDeps, start: float) -> float:
    return round((deps.clock() - start) * 1000.0, 3)
