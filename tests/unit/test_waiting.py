"""The one wait (tests/fixtures/waiting.py): quick polls first, then the caller's interval; its promises."""

import time

import pytest

from tests.fixtures.waiting import FIRST_PAUSE, _pauses, wait_for


def test_pauses_start_at_a_few_milliseconds_and_double_up_to_the_interval():
    pauses = _pauses(0.1)
    assert [round(next(pauses), 4) for _ in range(7)] == [0.005, 0.01, 0.02, 0.04, 0.08, 0.1, 0.1]
    slow = _pauses(0.002)  # an interval below the first pause is kept as it is
    assert [next(slow) for _ in range(3)] == [0.002, 0.002, 0.002]
    assert next(_pauses(0)) == 0  # interval=0: polls back to back


def test_a_condition_that_holds_soon_is_seen_within_milliseconds():
    ready_at = time.monotonic() + 0.012
    calls = []

    def ready():
        calls.append(time.monotonic())
        return time.monotonic() >= ready_at and "ready"

    started = time.monotonic()
    assert wait_for(ready, timeout=5) == "ready"
    # polled at 0, 5, 15, 35 ms: a fixed 0.1 s pause would have answered after 100 ms
    assert time.monotonic() - started < 0.1 + FIRST_PAUSE, calls
    assert 2 <= len(calls) <= 6, calls


def test_the_predicate_is_asked_once_more_at_the_deadline_and_a_timeout_names_it():
    calls = []

    def never():
        calls.append(time.monotonic())
        return False

    never.describe = lambda: "the thing that never happens"
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0\.3 s waiting for the thing that never happens"):
        wait_for(never, timeout=0.3, interval=0.1)
    assert calls[-1] - started >= 0.3
    assert len(calls) <= 10  # backed off to the interval: not a busy loop
