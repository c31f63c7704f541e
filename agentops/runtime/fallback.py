"""The fallback chain: primary model → backup model(s) → rule engine → human handoff, every hop recorded.

For each model handler:

1. its breaker is open → skip (hop ``breaker_open``);
2. else the retry loop by error class runs (``retry.call_with_retries``), each attempt under its timeout —
   adaptive when the operation+model has enough history, else the layered ``llm`` default — capped by the
   request deadline; the breaker is asked again before every retry (it may have opened meanwhile);
3. every attempt feeds the breaker (transient failure → failure; an answer, even a rejected one, or a
   permanent 4xx → success: the provider is up) and the latency history;
4. the answer is validated (empty, too short, refusal); a rejected answer moves the chain on.

Then the rule engine, then the human handoff (``Escalator``, reason ``all_fallbacks_failed``). Without a
handoff the chain raises ``FallbackExhausted`` carrying the hops.

``FALLBACKS{handler, reason}`` counts every move to a next handler: ``handler`` is where the chain went,
``reason`` why the previous one did not answer (an error class, ``breaker_open``, ``refusal``, ...).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentops.observability import genai
from agentops.observability.metrics import ERRORS, FALLBACKS
from agentops.runtime.breaker import BreakerState
from agentops.runtime.config import RuntimeConfig
from agentops.runtime.errors import ErrorClass, FallbackExhausted, NoRuleMatched, ProviderError, classify
from agentops.runtime.protocols import Escalator, HumanPending, HumanRejected
from agentops.runtime.providers.base import EmbeddingsRequest, LLMRequest, LLMResult, Provider
from agentops.runtime.retry import RetryBudget, RetryTrace, call_with_retries
from agentops.runtime.routing import Route, Target, handler_name
from agentops.runtime.timeouts import Deadline
from agentops.runtime.validation import VALIDATION_REASONS, validate_text

logger = logging.getLogger(__name__)

# Bugs in our own code or a provider implementation must stay loud, not turn into a quiet fallback.
PROGRAMMING_ERRORS = (TypeError, AttributeError, NameError, AssertionError, ImportError)


@dataclass(frozen=True)
class Hop:
    """One handler's part in a call.

    ``outcome``: ``ok`` | ``failed`` | ``invalid`` (validation) | ``breaker_open`` | ``deadline`` |
    ``no_provider`` | ``no_rule`` | ``answered`` (human) | ``pending`` (human) | ``rejected`` (human) |
    ``refused`` (a budget blocked the call; ``target`` is the budget, ``reason`` says by how much).
    ``reason`` is the error's reason or, for ``failed``, why retrying stopped (``max_retries``,
    ``permanent``, ``deadline``, ``budget_exhausted``); ``waits`` the back-off sleeps between attempts.
    """

    handler: str
    outcome: str
    target: str | None = None
    error_class: str | None = None
    attempts: int = 0
    duration_ms: float = 0.0
    reason: str | None = None
    waits: tuple[float, ...] = ()
    status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "handler": self.handler,
            "outcome": self.outcome,
            "target": self.target,
            "error_class": self.error_class,
            "attempts": self.attempts,
            "duration_ms": round(self.duration_ms, 3),
            "reason": self.reason,
            "waits": list(self.waits),
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hop:
        return cls(**{**data, "waits": tuple(data.get("waits") or ())})


@dataclass
class ChainOutcome:
    """What the chain produced: the answer, who gave it, and every hop."""

    result: LLMResult  # an EmbeddingsResult for an EmbeddingsRequest
    handler: str
    hops: list[Hop]
    last_error: ProviderError | None = None

    @property
    def attempts(self) -> int:
        return sum(hop.attempts for hop in self.hops)


class _BreakerOpened(Exception):
    """The breaker opened between two attempts of the same handler."""


class _DeadlineReached(Exception):
    """No time left for another attempt."""


@dataclass
class ChainContext:
    """What the chain needs besides the request and route (built per call by the guard)."""

    config: RuntimeConfig
    providers: Mapping[str, Provider]
    deadline: Deadline
    retry_budget: RetryBudget
    breakers: Any = None  # BreakerRegistry
    timeout_for: Callable[[str, str, float], float] | None = None  # AdaptiveTimeouts.timeout_for
    record_latency: Callable[[str, str, float], None] | None = None
    escalator: Escalator | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random | None = None
    errors_seen: list[ProviderError] = field(default_factory=list)
    upstream_seconds: float = 0.0  # spent waiting for providers (attempts), for the "our overhead" figure
    # The ``chat {model}`` span of the attempt that opened a stream: the guard's stream ends it with the usage.
    stream_span: Any = None


def run_chain(request: LLMRequest | EmbeddingsRequest, route: Route, ctx: ChainContext) -> ChainOutcome:
    """Run ``route``'s handlers in order until one answers; see the module docstring. An ``EmbeddingsRequest``
    is answered by the providers' ``embed`` (its result is an ``EmbeddingsResult``)."""
    hops: list[Hop] = []
    last_error: ProviderError | None = None
    reason_for_next: str | None = None

    def moved_on(handler: str) -> None:
        if reason_for_next is not None:
            FALLBACKS.labels(handler=handler, reason=reason_for_next).inc()

    for index, target in enumerate(route.chain):
        handler = handler_name(index)
        moved_on(handler)
        hop, result, error = _run_model_handler(request, handler, target, ctx, index)
        hops.append(hop)
        if result is not None:
            return ChainOutcome(result, handler, hops, last_error)
        if error is not None:
            last_error = error
            if request.passthrough and _client_error(error):
                # The caller's request is at fault (400, 404 model …): any other handler would refuse it too.
                raise FallbackExhausted(str(error), hops=hops, last_error=error)
        reason_for_next = _fallback_reason(hop)

    if route.use_rules and ctx.config.use_rules and ctx.config.rules:
        moved_on("rules")
        start = ctx.clock()
        try:
            result = ctx.config.rule_engine.complete(request)
        except NoRuleMatched:
            hops.append(Hop("rules", "no_rule", attempts=1, duration_ms=_ms(ctx, start), reason="no_rule"))
            reason_for_next = "no_rule"
        else:
            hops.append(Hop("rules", "ok", target=result.model, attempts=1, duration_ms=_ms(ctx, start)))
            return ChainOutcome(result, "rules", hops, last_error)

    if route.use_human and ctx.escalator is not None:
        moved_on("human")
        start = ctx.clock()
        try:
            outcome = ctx.escalator.handoff(request, list(hops), "all_fallbacks_failed")
        except HumanPending as exc:
            hops.append(Hop("human", "pending", attempts=1, duration_ms=_ms(ctx, start), reason=exc.reason))
            exc.hops = hops
            raise
        except HumanRejected:
            hops.append(Hop("human", "rejected", attempts=1, duration_ms=_ms(ctx, start)))
            raise
        hops.append(Hop("human", "answered", target=outcome.reviewer, attempts=1, duration_ms=_ms(ctx, start)))
        result = LLMResult(
            text=outcome.text,
            model="human",
            provider="human",
            finish_reason="human",
            raw={"escalation_id": outcome.escalation_id, "reviewer": outcome.reviewer},
        )
        return ChainOutcome(result, "human", hops, last_error)

    raise FallbackExhausted(
        f"every handler failed for operation {request.operation!r}"
        + (f" (last: {last_error.error_class.value})" if last_error else ""),
        hops=hops,
        last_error=last_error,
    )


def _client_error(error: ProviderError) -> bool:
    return error.error_class is ErrorClass.BAD_REQUEST and error.status is not None and 400 <= error.status < 500


def _fallback_reason(hop: Hop) -> str:
    if hop.outcome == "invalid":
        return hop.reason or "invalid"
    if hop.outcome == "failed":
        return hop.error_class or "error"
    return hop.outcome  # breaker_open, deadline, no_provider


def _ms(ctx: ChainContext, start: float) -> float:
    return round((ctx.clock() - start) * 1000.0, 3)


def _run_model_handler(
    request: LLMRequest | EmbeddingsRequest, handler: str, target: Target, ctx: ChainContext, index: int = 0
) -> tuple[Hop, LLMResult | None, ProviderError | None]:
    cfg = ctx.config
    start = ctx.clock()
    provider = ctx.providers.get(target.provider)
    if provider is None:
        logger.warning("no provider %r configured for %s; skipped", target.provider, target.name)
        return Hop(handler, "no_provider", target=target.name, reason=target.provider), None, None
    if ctx.deadline.remaining() <= 0:
        return Hop(handler, "deadline", target=target.name, reason="request_deadline"), None, None

    embeds = isinstance(request, EmbeddingsRequest)  # the same chain, asking ``embed`` and validating no text
    if embeds and not hasattr(provider, "embed"):
        return Hop(handler, "no_provider", target=target.name, reason="no_embeddings"), None, None

    breaker = ctx.breakers.get(target.provider, target.model) if ctx.breakers is not None else None
    if breaker is not None and not breaker.allow():
        return Hop(handler, "breaker_open", target=target.name, reason="breaker_open"), None, None

    operation = request.operation
    model = target.model
    default_timeout = cfg.timeouts.llm
    if ctx.timeout_for is not None and cfg.timeouts.adaptive:
        timeout = ctx.timeout_for(operation, model, default_timeout)
    else:
        timeout = default_timeout
    attempt_request = request.with_model(model)
    streams = request.stream and hasattr(provider, "open_stream")
    call = provider.embed if embeds else provider.open_stream if streams else provider.complete
    trace = RetryTrace()
    tripped = [False]  # this handler's failures opened its breaker: do not wait for a refused retry

    def attempt(number: int) -> LLMResult:
        if number > 1 and breaker is not None and not breaker.allow():
            raise _BreakerOpened()
        remaining = ctx.deadline.remaining()
        if remaining <= 0:
            raise _DeadlineReached()
        attempt_timeout = timeout if timeout < remaining else remaining
        # One CLIENT span per attempt (retries and fallback hops each get theirs), under the guard's span.
        span = genai.start_attempt(
            attempt_request,
            model=model,
            provider=provider,
            configured_provider=target.provider,
            handler=handler,
            hop=index,
            attempt=number,
            breaker=breaker,
            embeds=embeds,
        )
        began = ctx.clock()
        try:
            result = call(attempt_request, attempt_timeout)
        except PROGRAMMING_ERRORS as exc:
            ctx.upstream_seconds += ctx.clock() - began
            genai.failed(span, type(exc).__name__, exc)
            span.end()
            raise
        except Exception as exc:
            ctx.upstream_seconds += ctx.clock() - began
            err = classify(exc, provider=target.provider, model=model)
            genai.failed(span, err.error_class.value, err, status=err.status)
            span.end()
            ERRORS.labels(err.error_class.value, err.category.value).inc()
            if err.error_class is ErrorClass.TIMEOUT and ctx.record_latency is not None:
                ctx.record_latency(operation, model, attempt_timeout)
            if breaker is not None:
                if err.transient:
                    breaker.record_failure()
                    tripped[0] = breaker.state() is BreakerState.OPEN
                else:
                    breaker.record_success()
            if err is not exc:
                raise err from exc
            raise
        took = ctx.clock() - began
        ctx.upstream_seconds += took
        if ctx.record_latency is not None and not streams:  # time to a first chunk is not a call's duration
            ctx.record_latency(operation, model, took)
        if breaker is not None:
            breaker.record_success()
        if streams:  # a stream's text and usage are not known yet: the guard's stream ends the span
            ctx.stream_span = span
            return result
        genai.answered(span, result, embeds=embeds)
        if embeds:  # vectors have no text (the provider checks them)
            span.end()
            return result
        try:
            validate_text(
                result.text,
                cfg.validation,
                operation=operation,
                has_tool_calls=bool(result.tool_calls or result.function_call),
                cut_at_max_tokens=result.finish_reason == "length",
                provider=target.provider,
                model=model,
            )
        except ProviderError as err:
            ERRORS.labels(err.error_class.value, err.category.value).inc()
            genai.failed(span, err.reason or err.error_class.value, err)  # answered, but the answer was refused
            raise
        finally:
            span.end()
        return result

    outcome, error, result = "ok", None, None
    try:
        result = call_with_retries(
            attempt,
            settings=cfg.retry,
            budget=ctx.retry_budget,
            deadline=ctx.deadline,
            sleep=ctx.sleep,
            rng=ctx.rng,
            trace=trace,
            veto=lambda: "breaker_open" if tripped[0] else None,
        )
    except ProviderError as err:
        error = err
        if err.reason in VALIDATION_REASONS:
            outcome = "invalid"
        elif trace.stop_reason == "breaker_open":
            outcome = "breaker_open"
        else:
            outcome = "failed"
    except _BreakerOpened:
        outcome = "breaker_open"
        trace.stop_reason = "breaker_open"
        trace.attempts -= 1  # the refused attempt never reached the provider
    except _DeadlineReached:
        outcome = "deadline"
        trace.stop_reason = "request_deadline"
        trace.attempts -= 1
    if error is None and trace.errors:
        error = trace.errors[-1]
    if trace.errors:
        ctx.errors_seen.extend(trace.errors)
    reason = None
    if outcome == "invalid":
        reason = error.reason
    elif outcome != "ok":
        reason = trace.stop_reason
    hop = Hop(
        handler,
        outcome,
        target=target.name,
        error_class=error.error_class.value if error is not None else None,
        attempts=trace.attempts,
        duration_ms=_ms(ctx, start),
        reason=reason,
        waits=tuple(trace.waits),
        status=error.status if error is not None else None,
    )
    return hop, result, (error if outcome != "ok" else None)
