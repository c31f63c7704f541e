"""A call answered while PostgreSQL is away still reaches the ledger (found by tests/chaos/test_restarts.py): the
settle is tried again for a while, then parked in Redis and applied by beat at the call's own time."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import OperationalError
from django.utils import timezone

from budgets.actions import counters, ledger, reservations
from budgets.gate import BUDGET_GATE
from budgets.models import Reservation, UsageRecord
from tests.fixtures.factories import make_budget
from tests.integration.budgets.conftest import assert_balanced, counter_of

pytestmark = pytest.mark.django_db(transaction=True)

META = {"operation": "planning", "model": "gpt-4o", "estimated_input_tokens": 300, "estimated_output_tokens": 100}
USAGE = {"operation": "planning", "model": "gpt-4o", "provider": "mock", "input_tokens": 120, "output_tokens": 30}


@pytest.fixture
def database_away(monkeypatch):
    """Every ledger write fails as it does while PostgreSQL restarts, until `back()` is called."""
    real_settle, real_record = ledger.settle, ledger.record_usage

    def away(*args, **kwargs):
        raise counters.fail_closed(OperationalError("the database system is shutting down"))

    monkeypatch.setattr(ledger, "settle", away)
    monkeypatch.setattr(ledger, "record_usage", away)

    def back():
        monkeypatch.setattr(ledger, "settle", real_settle)
        monkeypatch.setattr(ledger, "record_usage", real_record)

    return back


def test_a_settle_that_outlasts_its_patience_is_parked_and_applied_by_beat(budget_db, database_away, settings):
    settings.BUDGET_SETTLE_PATIENCE_SECONDS = 0.6
    budget = make_budget("daily", scope="global", period="day", limit_tokens=10_000)
    reservation = reservations.reserve(META)
    answered_at = timezone.now()

    BUDGET_GATE.settle(reservation, USAGE)  # tries for 0.6 s, then parks
    BUDGET_GATE.settle(None, {**USAGE, "input_tokens": 7, "output_tokens": 3})  # a call no budget held
    assert UsageRecord.objects.count() == 0
    assert Reservation.objects.get(pk=reservation).status == "held"

    assert ledger.settle_parked() == 0  # PostgreSQL still away: the parked settles wait in Redis
    database_away()
    assert ledger.settle_parked() == 2
    assert ledger.settle_parked() == 0  # applied once

    records = list(UsageRecord.objects.order_by("id"))
    assert [(r.input_tokens, r.output_tokens) for r in records] == [(120, 30), (7, 3)]
    assert all(abs(r.created_at - answered_at) < dt.timedelta(seconds=5) for r in records)  # the call's time
    assert Reservation.objects.get(pk=reservation).status == "settled"
    counter = counter_of(budget)
    assert (counter.spent_tokens, counter.reserved_tokens) == (160, 0)
    assert_balanced(counter)


def test_a_settle_that_postgresql_answers_within_its_patience_is_not_parked(budget_db, database_away, settings):
    import threading

    settings.BUDGET_SETTLE_PATIENCE_SECONDS = 10
    budget = make_budget("daily", scope="global", period="day", limit_tokens=10_000)
    reservation = reservations.reserve(META)
    threading.Timer(0.8, database_away).start()  # PostgreSQL is back after 0.8 s

    BUDGET_GATE.settle(reservation, USAGE)
    assert UsageRecord.objects.get(reservation_id=reservation).input_tokens == 120
    assert ledger.settle_parked() == 0
    assert counter_of(budget).spent_tokens == 150


def test_a_parked_item_that_cannot_be_applied_is_logged_and_the_rest_still_are(budget_db, database_away, settings):
    from agentops.lib.redis import runtime_redis

    settings.BUDGET_SETTLE_PATIENCE_SECONDS = 0
    budget = make_budget("daily", scope="global", period="day", limit_tokens=10_000)
    runtime_redis().rpush(ledger.PARKED_KEY, b"not a parked settle")
    BUDGET_GATE.settle(reservations.reserve(META), USAGE)
    database_away()

    assert ledger.settle_parked() == 1
    assert runtime_redis().llen(ledger.PARKED_KEY) == 0
    assert counter_of(budget).spent_tokens == 150
