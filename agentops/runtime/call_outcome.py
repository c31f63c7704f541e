"""What the end of a guarded call records, answered or not: its Prometheus samples, its span's outcome
attributes and its ``llm.call`` log line. One place for the chat guard (``guard``), its streams and the
embeddings guard, so the three report a call the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from opentelemetry import trace

from agentops.observability import genai
from agentops.observability.metrics import LLM_CALLS, RESPONSE_SECONDS
from agentops.runtime.errors import FallbackExhausted, classify_any, describe
from agentops.runtime.fallback import ChainContext
from agentops.runtime.protocols import BudgetExceeded, CallCounter, HumanPending, HumanRejected
from agentops.runtime.providers.base import LLMRequest
from agentops.runtime.results import GuardResult

log = structlog.get_logger("agentops.llm")


def answered_attributes(result: GuardResult, outcome: str, reservation: Any) -> dict[str, Any]:
    """The guarded call's own attributes once it answered (the tokens are on the attempt spans)."""
    attributes: dict[str, Any] = {
        "agentops.outcome": outcome,
        "agentops.response.model": result.model,
        genai.HANDLER: result.handler,
        "agentops.attempts": result.attempts,
        "agentops.fallback.hops": len(result.hops),
        "agentops.cache_hit": result.cache_hit,
        "agentops.usage.input_tokens": result.input_tokens,
        "agentops.usage.output_tokens": result.output_tokens,
    }
    if isinstance(reservation, (int, str)):
        attributes[genai.BUDGET_RESERVATION] = reservation
    raw = result.raw if isinstance(result.raw, Mapping) else {}
    if raw.get("escalation_id") is not None:
        attributes[genai.ESCALATION_ID] = str(raw["escalation_id"])
    return attributes


def log_answered(request: LLMRequest, result: GuardResult, outcome: str, span: Any) -> None:
    """The ``llm.call`` line of an answered call, naming its span (the line may be written after it ended)."""
    metadata = request.metadata
    operation = request.operation
    # The line may be written after the span ended (a deferred line, a stream's end): name the span itself.
    context = span.get_span_context()
    if context.is_valid:
        ids = {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}
    else:
        ids = {}
    log.info(
        "llm.call",
        operation=operation,
        model=result.model,
        provider=result.provider,
        handler=result.handler,
        outcome=outcome,
        attempts=result.attempts,
        duration_ms=round(result.duration_ms, 3),
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        cache_hit=result.cache_hit,
        error_class=result.error_class,
        error_category=category_of(result.error_class),
        session_id=metadata.get("session_id", metadata.get("session")),
        run_id=metadata.get("run_id", metadata.get("run")),
        step=metadata.get("step"),
        agent=metadata.get("agent"),
        **ids,
    )


def record_failure(
    request: Any,
    exc: BaseException,
    ctx: ChainContext | None,
    *,
    duration_ms: float,
    calls: CallCounter | None,
    span: Any,
    recording: bool,
) -> None:
    """Metrics, span status and the log line of a call (chat or embeddings) that did not answer."""
    if isinstance(exc, BudgetExceeded):
        outcome = "budget_exceeded"
    elif isinstance(exc, HumanPending):
        outcome = "pending"
    elif isinstance(exc, HumanRejected):
        outcome = "rejected"
    elif isinstance(exc, FallbackExhausted):
        outcome = "failed"
    else:
        outcome = "error"
    hops = getattr(exc, "hops", None) or []
    error_class = ctx.errors_seen[-1].error_class.value if ctx is not None and ctx.errors_seen else None
    error_category = ctx.errors_seen[-1].category.value if ctx is not None and ctx.errors_seen else None
    metric_child(LLM_CALLS, request.operation, outcome).inc()
    if calls is not None:
        calls.count(outcome)
    metric_child(RESPONSE_SECONDS, request.operation).observe(duration_ms / 1000.0)
    if error_class is None and outcome not in ("pending", "rejected"):  # refused or failed before any provider
        found = classify_any(exc)
        error_class, error_category = found.error_class.value, found.category.value
    if recording:
        span.set_attribute("agentops.outcome", outcome)
        if isinstance(exc, BudgetExceeded):
            span.set_attribute(genai.BUDGET, str(exc.budget))
        elif isinstance(exc, (HumanPending, HumanRejected)) and exc.escalation_id is not None:
            span.set_attribute(genai.ESCALATION_ID, str(exc.escalation_id))
        if outcome in ("failed", "error"):
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
            span.set_attribute("error.type", error_class or type(exc).__name__)
    metadata = request.metadata
    log.warning(
        "llm.call",
        operation=request.operation,
        model=request.model or None,
        handler=hops[-1].handler if hops else None,
        outcome=outcome,
        attempts=sum(h.attempts for h in hops),
        duration_ms=round(duration_ms, 3),
        error_class=error_class,
        error_category=error_category,
        error=type(exc).__name__,
        session_id=metadata.get("session_id", metadata.get("session")),
        run_id=metadata.get("run_id", metadata.get("run")),
        step=metadata.get("step"),
        agent=metadata.get("agent"),
    )


def category_of(error_class: str | None) -> str | None:
    found = describe(error_class)
    return found.category.value if found is not None else None


_children: dict[tuple[Any, ...], Any] = {}


def metric_child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: ``labels()`` takes a lock and builds a key on every call."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child
