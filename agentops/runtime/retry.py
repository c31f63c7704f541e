"""Retries by error class: exponential curve with jitter, ``Retry-After`` honoured, deadline and budget aware.

The loop is tenacity's ``Retrying`` with our own wait/stop/retry strategies (the first attempt runs before any
tenacity object is built — most calls answer at once — and a failure hands over to tenacity as if tenacity
had made that attempt):

* **wait** — ``Retry-After`` when the server sent one, else ``base × multiplier^(n-1)`` capped at
  ``max_delay``, with jitter (×0.5–1.5, still capped);
* **stop** — a permanent error; the caller's veto (an open breaker); the class's retry count used up; the
  wait would run past the request deadline; the call's shared ``RetryBudget`` is spent;
* **retry** — only classified ``ProviderError``\\ s; anything else propagates untouched.

``call_classified`` runs any callable (a tool function inside a run) under the same loop: whatever it
raises is classified (``errors.classify_any``), a transient class is retried by its policy, and the
caller gets the *original* exception back once retrying stops.

``sleep`` and ``rng`` are injectable so tests record the waits instead of sleeping them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type

from agentops.observability.metrics import RETRIES
from agentops.runtime.errors import Classified, ErrorClass, ProviderError, classify_any

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one error class is retried. ``max_retries`` excludes the first try."""

    max_retries: int
    base: float = 1.0
    max_delay: float = 60.0
    multiplier: float = 2.0
    jitter: bool = True

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """The wait before retry ``retry_number`` (1-based), jitter included."""
        exponent = max(0, retry_number - 1)
        delay = min(self.base * self.multiplier**exponent, self.max_delay)
        if self.jitter:
            delay = min(delay * (0.5 + (rng or random).random()), self.max_delay)
        return max(0.0, delay)


# The seed's defaults (DESIGN.md §11), one per error class. Permanent classes (business failures, and the
# refusals of our own policy) are never retried whatever their row says; their rows stay at 0 to say so.
DEFAULT_POLICY = RetryPolicy(max_retries=3, base=1.0, max_delay=60.0)
DEFAULT_POLICIES: Mapping[ErrorClass, RetryPolicy] = {
    ErrorClass.CONNECTION: RetryPolicy(max_retries=5, base=0.5),
    ErrorClass.TIMEOUT: RetryPolicy(max_retries=3, base=1.0),
    ErrorClass.RATE_LIMIT: RetryPolicy(max_retries=3, base=10.0),
    ErrorClass.SERVICE_UNAVAILABLE: RetryPolicy(max_retries=4, base=2.0),
    ErrorClass.INVALID_RESPONSE: RetryPolicy(max_retries=3, base=1.0),
    # Memory, disk or file descriptors ran out: often freed within seconds (a temp file removed, a
    # connection closed), rarely within a minute — two quick tries, then the next handler / the agent.
    ErrorClass.RESOURCE_EXHAUSTED: RetryPolicy(max_retries=2, base=0.5, max_delay=5.0),
    ErrorClass.AUTHENTICATION: RetryPolicy(max_retries=0),
    ErrorClass.BAD_REQUEST: RetryPolicy(max_retries=0),
    # Logic: the same question gets the same wrong answer; the chain moves on to the next handler.
    ErrorClass.REJECTED_ANSWER: RetryPolicy(max_retries=0),
    ErrorClass.LOGIC_ERROR: RetryPolicy(max_retries=0),
    ErrorClass.BUDGET_EXCEEDED: RetryPolicy(max_retries=0),
}
DEFAULT_RETRY_BUDGET = 6


@dataclass(frozen=True)
class RetrySettings:
    """Per-class policies (``default`` for classes not listed) and the per-call retry budget."""

    default: RetryPolicy = DEFAULT_POLICY
    by_class: Mapping[ErrorClass, RetryPolicy] = field(default_factory=lambda: dict(DEFAULT_POLICIES))
    budget: int = DEFAULT_RETRY_BUDGET

    def policy_for(self, error_class: ErrorClass) -> RetryPolicy:
        return self.by_class.get(error_class, self.default)


class RetryBudget:
    """Retries left for one guarded call, shared by every handler of its fallback chain."""

    __slots__ = ("total", "used")

    def __init__(self, total: int = DEFAULT_RETRY_BUDGET) -> None:
        self.total = total
        self.used = 0

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.used)

    def try_spend(self) -> bool:
        if self.used >= self.total:
            return False
        self.used += 1
        return True


class SupportsRemaining(Protocol):
    def remaining(self) -> float: ...


@dataclass
class RetryTrace:
    """What one retry loop did: attempts made, waits slept, errors seen and why it stopped."""

    attempts: int = 0
    waits: list[float] = field(default_factory=list)
    errors: list[ProviderError] = field(default_factory=list)
    stop_reason: str | None = None  # permanent | max_retries | deadline | budget_exhausted


def call_with_retries(
    fn: Callable[[int], T],
    *,
    settings: RetrySettings,
    budget: RetryBudget,
    deadline: SupportsRemaining | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    trace: RetryTrace | None = None,
    on_error: Callable[[ProviderError, int], None] | None = None,
    veto: Callable[[], str | None] | None = None,
) -> T:
    """Call ``fn(attempt_number)`` until it returns, retrying ``ProviderError`` by its class's policy.

    Raises the last ``ProviderError`` when retrying stops (``trace.stop_reason`` says why); any other
    exception propagates at once. ``on_error(error, attempt)`` runs after every failed attempt;
    ``veto()`` is asked before each retry and may stop it by returning a reason (e.g. ``"breaker_open"``).
    """
    trace = trace if trace is not None else RetryTrace()

    def attempt() -> T:
        trace.attempts += 1
        try:
            return fn(trace.attempts)
        except ProviderError as err:
            trace.errors.append(err)
            if on_error is not None:
                on_error(err, trace.attempts)
            raise

    def wait(state: RetryCallState) -> float:
        err = state.outcome.exception()  # type: ignore[union-attr]
        if not isinstance(err, ProviderError) or not err.transient:
            return 0.0
        if err.retry_after is not None:
            return err.retry_after
        return settings.policy_for(err.error_class).delay(state.attempt_number, rng)

    def stop(state: RetryCallState) -> bool:
        err = state.outcome.exception()  # type: ignore[union-attr]
        reason = None
        if not err.transient:
            reason = "permanent"
        elif veto is not None and (vetoed := veto()) is not None:
            reason = vetoed
        elif state.attempt_number > settings.policy_for(err.error_class).max_retries:
            reason = "max_retries"
        elif deadline is not None and state.upcoming_sleep >= deadline.remaining():
            reason = "deadline"
        elif not budget.try_spend():
            reason = "budget_exhausted"
        if reason is not None:
            trace.stop_reason = reason
            return True
        trace.waits.append(state.upcoming_sleep)
        RETRIES.labels(err.error_class.value, err.category.value).inc()
        return False

    # Fast path: the first attempt without building the tenacity machinery (most calls stop here).
    try:
        return attempt()
    except ProviderError as err:
        first_error: ProviderError | None = err

    def replay_then_attempt() -> T:
        # Tenacity's attempt 1 is the one already made: re-raise its error so the strategies see it.
        nonlocal first_error
        if first_error is not None:
            err, first_error = first_error, None
            raise err
        return attempt()

    retrying = Retrying(
        sleep=sleep,
        stop=stop,
        wait=wait,
        retry=retry_if_exception_type(ProviderError),
        reraise=True,
    )
    return retrying(replay_then_attempt)


class _Classified(ProviderError):
    """Carries a non-provider failure through the retry loop (``__cause__`` is the original exception)."""


def call_classified(
    fn: Callable[[], T],
    *,
    settings: RetrySettings,
    budget: RetryBudget,
    deadline: SupportsRemaining | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    trace: RetryTrace | None = None,
    on_error: Callable[[BaseException, Classified, int], None] | None = None,
    passthrough: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``fn()`` until it returns, retrying a failure whose class is transient by that class's policy.

    Raises the last attempt's original exception when retrying stops (``trace.stop_reason`` says why).
    ``on_error(exc, classified, attempt)`` runs after every failed attempt; ``passthrough`` exceptions (and
    BaseExceptions such as a run's suspension) propagate at once, unclassified.
    """
    trace = trace if trace is not None else RetryTrace()

    def attempt(number: int) -> T:
        try:
            return fn()
        except passthrough:
            raise
        except Exception as exc:
            found = classify_any(exc)
            if on_error is not None:
                on_error(exc, found, number)
            carrier = _Classified(
                found.error_class,
                str(exc)[:200],
                transient=found.transient,
                category=found.category,
                reason=found.reason,
            )
            raise carrier from exc

    try:
        return call_with_retries(
            attempt, settings=settings, budget=budget, deadline=deadline, sleep=sleep, rng=rng, trace=trace
        )
    except _Classified as carrier:
        original = carrier.__cause__
    raise original  # outside the except block: the agent sees its tool's exception, not our carrier
