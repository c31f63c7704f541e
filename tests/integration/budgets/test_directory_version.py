"""The hold statement checks the budget directory's PostgreSQL version (migration 0010): a process's cached
copy of the budgets is never trusted past a change, even one whose Redis version bump never arrived."""

from __future__ import annotations

import pytest
from django.db import connection

from agentops.runs.models import Agent
from agentops.runtime.protocols import BudgetExceeded
from budgets.actions import reservations
from budgets.models import ModelPrice, Reservation
from tests.fixtures.factories import make_budget

pytestmark = pytest.mark.usefixtures("budget_db")


def version() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT n FROM budgets_directory_version")
        return cursor.fetchone()[0]


def meta(tokens: int = 100, agent: str = "dir-agent") -> dict:
    return {"agent": agent, "model": "gpt-4o", "operation": "planning", "estimated_tokens": tokens}


def test_a_limit_lowered_without_telling_redis_binds_the_next_reservation():
    budget = make_budget("dir-day", limit_tokens=10_000)
    assert reservations.reserve(meta()) is not None  # this process now holds a copy with 10,000
    with connection.cursor() as cursor:  # as another process whose after-commit Redis bump was lost
        cursor.execute("UPDATE budgets_budget SET limit_tokens = 150 WHERE id = %s", [budget.pk])

    with pytest.raises(BudgetExceeded, match="150"):
        reservations.reserve(meta())
    assert Reservation.objects.filter(status=Reservation.Status.HELD).count() == 1


def test_budgets_prices_and_a_teams_change_move_the_version_and_an_unrelated_agent_save_does_not():
    before = version()
    make_budget("dir-month", limit_tokens=5_000, period="month")
    assert version() > before

    before = version()
    ModelPrice.objects.filter(model="gpt-4o").update(note="edited")
    assert version() > before

    agent = Agent.objects.create(name="dir-agent-2", team="")
    before = version()
    agent.description = "no team change"
    agent.save()
    assert version() == before
    agent.team = "research"
    agent.save()
    assert version() > before
