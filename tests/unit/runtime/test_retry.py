"""Retry policies by error class: curve, jitter, Retry-After, deadline, shared budget — with recorded waits."""

from __future__ import annotations

import random

import pytest

from agentops.observability.metrics import RETRIES
from agentops.runtime.errors import ErrorClass, ProviderError
from agentops.runtime.retry import (
    DEFAULT_POLICIES,
    DEFAULT_POLICY,
    RetryBudget,
    RetryPolicy,
    RetrySettings,
    RetryTrace,
    call_with_retries,
)
from agentops.runtime.timeouts import Deadline
from tests.fixtures.runtime import FakeClock, Sleeper


def failing(*errors: ProviderError, result: str = "ok"):
    """A callable raising ``errors`` in order, then returning ``result``."""
    calls: list[int] = []

    def fn(attempt: int) -> str:
        calls.append(attempt)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    fn.calls = calls
    return fn


def err(cls: ErrorClass, **kw) -> ProviderError:
    return ProviderError(cls, cls.value, **kw)


NO_JITTER = RetrySettings(
    default=RetryPolicy(3, base=1.0, max_delay=60.0, jitter=False),
    by_class={
        cls: RetryPolicy(p.max_retries, p.base, p.max_delay, p.multiplier, jitter=False)
        for cls, p in DEFAULT_POLICIES.items()
    },
)


def retries_metric(cls: ErrorClass) -> float:
    return RETRIES.labels(cls.value, cls.category.value)._value.get()


def test_seed_defaults():
    assert RetryPolicy(3, 1.0, 60.0, 2.0, True) == DEFAULT_POLICY
    assert DEFAULT_POLICIES[ErrorClass.CONNECTION] == RetryPolicy(5, 0.5)
    assert DEFAULT_POLICIES[ErrorClass.RATE_LIMIT] == RetryPolicy(3, 10.0)
    assert DEFAULT_POLICIES[ErrorClass.SERVICE_UNAVAILABLE] == RetryPolicy(4, 2.0)
    assert DEFAULT_POLICIES[ErrorClass.AUTHENTICATION].max_retries == 0
    assert DEFAULT_POLICIES[ErrorClass.BAD_REQUEST].max_retries == 0
    settings = RetrySettings()
    assert settings.policy_for(ErrorClass.TIMEOUT) == settings.default == RetryPolicy(3, 1.0)
    assert settings.budget == 6


def test_every_error_class_has_a_default_policy_logic_none_resource_a_short_backoff():
    assert set(DEFAULT_POLICIES) == set(ErrorClass)
    for cls in (ErrorClass.REJECTED_ANSWER, ErrorClass.LOGIC_ERROR, ErrorClass.BUDGET_EXCEEDED):
        assert DEFAULT_POLICIES[cls].max_retries == 0 and not cls.transient  # the next handler, at once
    resource = DEFAULT_POLICIES[ErrorClass.RESOURCE_EXHAUSTED]
    assert (resource.max_retries, resource.base, resource.max_delay) == (2, 0.5, 5.0)


def test_curve_is_exponential_and_capped():
    policy = RetryPolicy(10, base=1.0, max_delay=60.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_jitter_stays_within_half_to_one_and_a_half_and_under_the_cap():
    policy = RetryPolicy(5, base=2.0, max_delay=5.0)
    rng = random.Random(7)
    for n in range(1, 5):
        for _ in range(200):
            d = policy.delay(n, rng)
            nominal = min(2.0 * 2 ** (n - 1), 5.0)
            assert 0.5 * nominal <= d <= min(1.5 * nominal, 5.0)


def test_recovers_after_connection_errors_with_the_connection_curve():
    sleep = Sleeper()
    fn = failing(err(ErrorClass.CONNECTION), err(ErrorClass.CONNECTION))
    trace = RetryTrace()
    before = retries_metric(ErrorClass.CONNECTION)
    assert call_with_retries(fn, settings=NO_JITTER, budget=RetryBudget(10), sleep=sleep, trace=trace) == "ok"
    assert fn.calls == [1, 2, 3]
    assert sleep.waits == [0.5, 1.0] == trace.waits
    assert trace.attempts == 3 and trace.stop_reason is None
    assert retries_metric(ErrorClass.CONNECTION) - before == 2


@pytest.mark.parametrize(
    ("cls", "attempts", "waits"),
    [
        (ErrorClass.CONNECTION, 6, [0.5, 1, 2, 4, 8]),
        (ErrorClass.SERVICE_UNAVAILABLE, 5, [2, 4, 8, 16]),
        (ErrorClass.RATE_LIMIT, 4, [10, 20, 40]),
        (ErrorClass.TIMEOUT, 4, [1, 2, 4]),
        (ErrorClass.AUTHENTICATION, 1, []),
        (ErrorClass.BAD_REQUEST, 1, []),
    ],
)
def test_each_class_gives_up_after_its_retry_count(cls, attempts, waits):
    sleep = Sleeper()
    fn = failing(*[err(cls) for _ in range(10)])
    trace = RetryTrace()
    with pytest.raises(ProviderError) as info:
        call_with_retries(fn, settings=NO_JITTER, budget=RetryBudget(100), sleep=sleep, trace=trace)
    assert info.value.error_class is cls
    assert trace.attempts == attempts and sleep.waits == waits
    assert trace.stop_reason == ("max_retries" if waits else "permanent")


def test_permanent_errors_are_never_retried_even_if_a_policy_says_so():
    settings = RetrySettings(by_class={ErrorClass.BAD_REQUEST: RetryPolicy(5, 0.1)})
    fn = failing(err(ErrorClass.BAD_REQUEST))
    trace = RetryTrace()
    with pytest.raises(ProviderError):
        call_with_retries(fn, settings=settings, budget=RetryBudget(), sleep=Sleeper(), trace=trace)
    assert trace.attempts == 1 and trace.stop_reason == "permanent"


def test_retry_after_replaces_the_curve():
    sleep = Sleeper()
    fn = failing(err(ErrorClass.RATE_LIMIT, retry_after=3.0), err(ErrorClass.RATE_LIMIT, retry_after=0.0))
    call_with_retries(fn, settings=NO_JITTER, budget=RetryBudget(), sleep=sleep)
    assert sleep.waits == [3.0, 0.0]


def test_a_wait_past_the_deadline_stops_retrying():
    clock = FakeClock(start=100.0)
    sleep = Sleeper(clock)
    deadline = Deadline.after(5.0, clock=clock)
    fn = failing(err(ErrorClass.RATE_LIMIT, retry_after=30.0))
    trace = RetryTrace()
    with pytest.raises(ProviderError):
        call_with_retries(fn, settings=NO_JITTER, budget=RetryBudget(), deadline=deadline, sleep=sleep, trace=trace)
    assert trace.attempts == 1 and sleep.waits == [] and trace.stop_reason == "deadline"


def test_the_curve_is_cut_by_the_deadline_too():
    clock = FakeClock(start=100.0)
    sleep = Sleeper(clock)
    deadline = Deadline.after(10.0, clock=clock)  # 2 + 4 fit, the next 8 would not
    fn = failing(*[err(ErrorClass.SERVICE_UNAVAILABLE) for _ in range(5)])
    trace = RetryTrace()
    with pytest.raises(ProviderError):
        call_with_retries(fn, settings=NO_JITTER, budget=RetryBudget(), deadline=deadline, sleep=sleep, trace=trace)
    assert sleep.waits == [2, 4] and trace.stop_reason == "deadline"


def test_one_budget_is_shared_by_several_loops():
    budget = RetryBudget(3)
    settings = RetrySettings(default=RetryPolicy(5, 0.0, jitter=False), by_class={})
    first, second = RetryTrace(), RetryTrace()
    result = call_with_retries(
        failing(*[err(ErrorClass.TIMEOUT)] * 2), settings=settings, budget=budget, sleep=Sleeper(), trace=first
    )
    assert result == "ok" and first.attempts == 3 and budget.remaining == 1
    with pytest.raises(ProviderError):
        call_with_retries(
            failing(*[err(ErrorClass.TIMEOUT)] * 5), settings=settings, budget=budget, sleep=Sleeper(), trace=second
        )
    assert second.attempts == 2 and second.stop_reason == "budget_exhausted" and budget.remaining == 0


def test_other_exceptions_propagate_untouched():
    def fn(attempt):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        call_with_retries(fn, settings=NO_JITTER, budget=RetryBudget(), sleep=Sleeper())


def test_on_error_sees_every_failed_attempt():
    seen = []
    fn = failing(err(ErrorClass.TIMEOUT), err(ErrorClass.CONNECTION))
    call_with_retries(
        fn,
        settings=NO_JITTER,
        budget=RetryBudget(),
        sleep=Sleeper(),
        on_error=lambda e, n: seen.append((e.error_class, n)),
    )
    assert seen == [(ErrorClass.TIMEOUT, 1), (ErrorClass.CONNECTION, 2)]


def test_budget_accounting():
    budget = RetryBudget(2)
    assert budget.try_spend() and budget.try_spend() and not budget.try_spend()
    assert (budget.used, budget.remaining) == (2, 0)


def test_a_first_attempt_that_answers_builds_no_tenacity_machinery(monkeypatch):
    import agentops.runtime.retry as retry

    def no_tenacity(*args, **kwargs):
        raise AssertionError("Retrying built for a call that answered at once")

    monkeypatch.setattr(retry, "Retrying", no_tenacity)
    trace = RetryTrace()
    assert call_with_retries(failing(), settings=RetrySettings(), budget=RetryBudget(), trace=trace) == "ok"
    assert (trace.attempts, trace.waits, trace.errors, trace.stop_reason) == (1, [], [], None)


def test_the_handover_to_tenacity_after_a_failed_first_attempt_counts_it_once():
    sleeper = Sleeper()
    trace = RetryTrace()
    first = err(ErrorClass.SERVICE_UNAVAILABLE)
    fn = failing(first, first)
    settings = RetrySettings(by_class={ErrorClass.SERVICE_UNAVAILABLE: RetryPolicy(3, base=1.0, jitter=False)})
    assert call_with_retries(fn, settings=settings, budget=RetryBudget(), sleep=sleeper, trace=trace) == "ok"
    assert fn.calls == [1, 2, 3]
    assert (trace.attempts, trace.waits, len(trace.errors)) == (3, [1.0, 2.0], 2)
    assert sleeper.waits == [1.0, 2.0]
