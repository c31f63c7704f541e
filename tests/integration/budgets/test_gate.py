"""Budgets in the guard pipeline of real durable runs on a real Celery worker (DESIGN.md §4 step 3 and 5, §7):
every ctx.llm call reserves before and settles after into one priced ledger row; a refused call is downgraded
to the budget's cheaper model, escalated to a reviewer (budget_exceeded) or failed with the budget's name;
cache hits are recorded at zero cost."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import pytest

from agentops.config import actions as config_actions
from agentops.config.models import RuntimeSettings
from agentops.config.source import config_source
from agentops.runs.actions import agents as agent_actions
from agentops.runs.actions import lifecycle
from agentops.runs.models import Run, Step
from budgets.actions import prices
from budgets.models import Alert, Reservation, UsageRecord
from review import actions as review
from review.models import Escalation
from tests.fixtures.factories import make_budget, run_in
from tests.fixtures.people import ALICE
from tests.fixtures.stack import reseed_runtime
from tests.fixtures.waiting import wait_for
from tests.integration.budgets.conftest import assert_balanced, counter_of

pytestmark = pytest.mark.django_db(transaction=True)

TEST_AGENT_MODULES = "tests.fixtures.test_agents"
CONFIG_RELOAD_SECONDS = 1.2  # workers probe the runtime config version at most once a second


@pytest.fixture
def gate(budget_db, settings, worker):
    """Seed runtime settings (simulated models), seed prices, no budgets; the worker has reloaded them."""
    settings.AGENTOPS_AGENT_MODULES = [TEST_AGENT_MODULES]
    reseed_runtime()
    config_source().invalidate()
    time.sleep(CONFIG_RELOAD_SECONDS)
    return make_budget


def start(agent: str, data: dict, **kwargs) -> Run:
    run, _ = lifecycle.start_run(agent_actions.ensure_agent(agent), data, **kwargs)
    return run


def steps_of(run: Run) -> list[Step]:
    return list(Step.objects.filter(run=run).order_by("seq"))


def topic() -> str:
    return f"budgets {uuid.uuid4().hex[:8]}"  # never answered from an earlier test's cache


def test_every_llm_call_of_a_run_reserves_and_settles_into_one_priced_ledger_row(gate):
    everyone = gate("daily", scope="global", period="day", limit_tokens=1_000_000)
    sessions = gate("per session", scope="session", period="lifetime", limit_tokens=50_000)
    agents = gate("research agent", scope="agent", scope_key="research", limit_usd=Decimal("10"))

    run = wait_for(run_in(start("research", {"topic": topic(), "depth": 1}, session_id="sess-42").pk, "succeeded"))
    llm_steps = [s for s in steps_of(run) if s.kind == "llm"]
    assert [s.name for s in llm_steps] == ["planning", "summarize"]

    reservations = list(Reservation.objects.filter(run_id=run.pk).order_by("id"))
    records = list(UsageRecord.objects.filter(run_id=run.pk).order_by("id"))
    assert [r.status for r in reservations] == ["settled", "settled"]
    assert len(records) == len(llm_steps) == 2
    for step, reservation, record in zip(llm_steps, reservations, records, strict=True):
        assert (reservation.agent, reservation.session_id, reservation.operation) == ("research", "sess-42", step.name)
        assert record.reservation_id == reservation.pk
        assert (record.run_id, record.session_id, record.agent, record.operation, record.source) == (
            run.pk,
            "sess-42",
            "research",
            step.name,
            "run",
        )
        assert (record.model, record.provider) == (step.model, "simulated")
        assert (record.input_tokens, record.output_tokens) == (step.input_tokens, step.output_tokens)
        assert 0 < record.total_tokens <= reservation.tokens  # the estimate covered the call
        price = prices.price_in_force(record.model, record.created_at)
        assert record.price_id == price.pk and price.model == step.model
        assert record.cost_usd == prices.cost_of(price, record.input_tokens, record.output_tokens) > 0
        assert not record.cached
    assert {r.model for r in records} == {"gpt-4o", "gpt-4o-mini"}  # planning on the large model, the rest small
    for counter, filters in (
        (counter_of(everyone), {}),
        (counter_of(sessions, "research/sess-42"), {"agent": "research", "session_id": "sess-42"}),
        (counter_of(agents, "research"), {"agent": "research"}),
    ):
        assert_balanced(counter, **filters)
        assert counter.spent_tokens == sum(r.total_tokens for r in records)


def test_a_per_operation_limit_fails_the_oversized_call_with_the_budgets_name(gate):
    # t-steps plans without max_tokens: the estimate is the prompt + the default 512 output tokens.
    gate(
        "per call",
        scope="global",
        operation_limits={"planning": 500},
        downgrade_model="gpt-4o-mini",  # a cheaper model does not make the call smaller
        on_block="fail",
    )
    run = wait_for(run_in(start("t-steps", {"topic": topic(), "steps": 1}).pk, "failed", "succeeded", "waiting_human"))
    assert run.status == "failed" and run.error_class == "BudgetExceeded"
    assert 'budget "per call" (day) allows at most 500 tokens per planning call' in run.error
    planning = steps_of(run)[0]
    assert (planning.kind, planning.name, planning.status, planning.error_class) == (
        "llm",
        "planning",
        "failed",
        "BudgetExceeded",
    )
    assert 'budget "per call"' in planning.error
    assert not UsageRecord.objects.exists() and not Reservation.objects.exists()
    # A call within the limit goes through (research plans with max_tokens=300).
    ok = wait_for(run_in(start("research", {"topic": topic(), "depth": 1}).pk, "succeeded", "failed"))
    assert ok.status == "succeeded", ok.error


def test_a_call_over_a_dollar_limit_is_downgraded_to_the_budgets_cheaper_model(gate):
    # Planning on gpt-4o is estimated at about $0.0103, on gpt-4o-mini at about $0.0006.
    budget = gate(
        "dollars",
        scope="agent",
        scope_key="t-steps",
        limit_usd=Decimal("0.0050"),
        downgrade_model="gpt-4o-mini",
        on_block="fail",
    )
    run = wait_for(run_in(start("t-steps", {"topic": topic(), "steps": 1}).pk, "succeeded", "failed", "waiting_human"))
    assert run.status == "succeeded", run.error
    planning = steps_of(run)[0]
    assert (planning.model, planning.handler) == ("gpt-4o-mini", "primary")
    record = UsageRecord.objects.get(run_id=run.pk)
    assert (record.model, record.operation, record.agent) == ("gpt-4o-mini", "planning", "t-steps")
    assert record.price.model == "gpt-4o-mini" and record.cost_usd > 0
    reservation = Reservation.objects.get(pk=record.reservation_id)
    assert (reservation.model, reservation.status) == ("gpt-4o-mini", "settled")
    assert reservation.usd < Decimal("0.0050")
    assert_balanced(counter_of(budget, "t-steps"), agent="t-steps")
    assert Alert.objects.filter(kind="exhausted", budget=budget).exists()  # the refused gpt-4o call


def test_a_blocked_call_escalates_with_reason_budget_exceeded_and_a_take_over_resumes_the_run(gate):
    # The cheaper model does not fit either (the limit is in tokens): the call goes to a reviewer.
    budget = gate("tight", scope="global", limit_tokens=100, downgrade_model="gpt-4o-mini", on_block="escalate")
    run = wait_for(run_in(start("t-steps", {"topic": topic(), "steps": 1}).pk, "waiting_human", "failed"))
    assert run.status == "waiting_human", run.error
    waiting = steps_of(run)[0]
    assert (waiting.kind, waiting.name, waiting.status) == ("llm", "planning", "waiting_human")
    escalation = Escalation.objects.get(run=run)
    assert (escalation.reason, escalation.step_seq, escalation.state) == ("budget_exceeded", waiting.seq, "pending")
    assert escalation.pk == waiting.escalation_id
    assert any(hop.get("target") == "tight" for hop in escalation.context["hops"])  # which budget refused
    assert not Reservation.objects.exists()

    review.decide(escalation.pk, ALICE.user(), "taken_over", result="a plan the reviewer wrote by hand")
    run = wait_for(run_in(run.pk, "succeeded", "failed"))
    assert run.status == "succeeded", run.error
    assert run.output["plan"] == "a plan the reviewer wrote by hand"[:40]
    assert steps_of(run)[0].handler == "human"
    assert not Reservation.objects.exists()
    counter = counter_of(budget)
    assert (counter.spent_tokens, counter.reserved_tokens, counter.in_flight) == (0, 0, 0)


def test_a_blocked_call_fails_the_run_with_a_clear_budget_message(gate):
    budget = gate("tight", scope="global", limit_tokens=100, on_block="fail")
    run = wait_for(run_in(start("t-steps", {"topic": topic(), "steps": 1}).pk, "failed", "waiting_human", "succeeded"))
    assert run.status == "failed" and run.error_class == "BudgetExceeded"
    assert 'budget "tight" (day) has 100 of 100 tokens left; this call needs up to' in run.error
    assert not Escalation.objects.filter(run=run).exists()
    assert not Reservation.objects.exists() and not UsageRecord.objects.exists()
    assert counter_of(budget).reserved_tokens == 0


def test_a_cache_hit_records_a_zero_cost_cached_usage_row(gate):
    budget = gate("daily", scope="global", limit_tokens=1_000_000)
    row = RuntimeSettings.objects.get()
    row.cacheable_operations = "planning"
    config_actions.save_runtime_object(row)
    time.sleep(CONFIG_RELOAD_SECONDS)

    same = {"topic": topic(), "steps": 1}
    first = wait_for(run_in(start("t-steps", same, session_id="s-1").pk, "succeeded", "failed"))
    second = wait_for(run_in(start("t-steps", same, session_id="s-2").pk, "succeeded", "failed"))
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert steps_of(second)[0].cache_hit and not steps_of(first)[0].cache_hit

    paid = UsageRecord.objects.get(run_id=first.pk)
    hit = UsageRecord.objects.get(run_id=second.pk)
    assert not paid.cached and paid.cost_usd > 0 and paid.reservation_id is not None
    assert (hit.cached, hit.cost_usd, hit.price_id, hit.reservation_id) == (True, 0, None, None)
    assert (hit.session_id, hit.agent, hit.operation, hit.model) == ("s-2", "t-steps", "planning", paid.model)
    assert Reservation.objects.count() == 1  # the hit reserved nothing
    counter = counter_of(budget)
    assert_balanced(counter, cached=False)
    assert counter.spent_tokens == paid.total_tokens  # and used no budget
