"""Restart Redis under load, then PostgreSQL under load: nothing recorded is lost and everything recovers by
itself.

An agent client starts runs through the REST API at a steady pace (with an Idempotency-Key, retrying any
failure as an agent SDK would), the runs' models answer from the fault-injecting mock (so the mock's request
count is the ground truth of paid calls), a global budget holds every call's reservation, and a reviewer
approves the emails that wait for a human. Meanwhile Redis is stopped (snapshot kept) and started again; later
PostgreSQL is stopped and started again. The test restarts no process of its own accord; a worker that exits
by itself would be started again, as a process supervisor would, counted in the table and fail the test.

Proves: every run the client started exists once and succeeds (a run whose journal or reservation met the
outage goes back to the queue and resumes), so workers, beat and the web server reconnected on their own and
no worker stopped; no escalation or decision is lost (every waiting step has its escalation, decided once, the
decision on its step); every call the mock answered has its usage record (ledger rows == mock requests);
afterwards the budget counters hold nothing and equal the ledger; /readyz answers 200.

Costs about 25 s when everything recovers, about 50 s when runs are stranded (the 30 s stall detection).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from decimal import Decimal

import httpx
import pytest

from agentops.config import actions as config_actions
from agentops.config.models import RetryPolicy
from agentops.demo.management.commands.seed_demo import route_demo_models_to_mock
from agentops.keys import actions as key_actions
from agentops.runs.models import Run
from budgets.actions import budgets as budget_actions
from budgets.models import Budget, BudgetCounter, Reservation
from tests.chaos.harness import (
    Progress,
    Reviewer,
    assert_escalations_whole,
    delivered_orders,
    describe_stuck,
    effect_report,
    escalation_report,
    record_row,
    reexecuted_steps,
    retry_database,
    statuses,
    usage_totals,
)
from tests.fixtures.factories import seed_prices
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.slow

CONFIG_RELOAD_SECONDS = 1.2  # workers probe the runtime config version at most once a second


@pytest.fixture
def mocked_models(chaos_db, mock):
    """The demo routes' primaries on the mock (fast back-offs), the seed prices and one global budget."""
    route_demo_models_to_mock(mock.base_url)
    for policy in RetryPolicy.objects.all():
        policy.base_delay, policy.max_delay, policy.jitter = 0.05, 0.2, False
        config_actions.save_runtime_object(policy)
    seed_prices()
    Budget.objects.all().delete()
    budget = budget_actions.save_budget(
        Budget(name="chaos global", scope="global", period="day", timezone="UTC", limit_tokens=10**9)
    )
    time.sleep(CONFIG_RELOAD_SECONDS)
    return budget


class AgentClient(threading.Thread):
    """Starts `count` runs through POST /api/v1/runs, one every `interval` seconds, each with its own
    Idempotency-Key, retrying a failed request with the same key until it is answered 200/201."""

    def __init__(self, base_url: str, keys: dict[str, str], inputs: list[tuple[str, dict]], interval: float):
        super().__init__(name="chaos-agent-client", daemon=True)
        self.base_url, self.keys, self.inputs, self.interval = base_url, keys, inputs, interval
        self.runs: dict[str, int] = {}  # idempotency key → run id
        self.answers: Counter = Counter()  # status code (or exception name) of every request
        self.error: BaseException | None = None
        self.stop = False  # the test ended early: start no more runs
        self.crashed: list[str] = []  # workers that exited on their own (restarted as a supervisor would)
        self.deadline = time.monotonic() + 180 + len(inputs) * interval  # for the whole chaos part of the test

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url + "/api/v1", timeout=15) as client:
                for i, (agent, data) in enumerate(self.inputs):
                    if self.stop:
                        return
                    self.runs[f"chaos-{i}"] = self._start(client, f"chaos-{i}", agent, data)
                    time.sleep(self.interval)
        except BaseException as exc:
            self.error = exc

    def _start(self, client: httpx.Client, key: str, agent: str, data: dict) -> int:
        def accepted() -> int | None:
            try:
                response = client.post(
                    "/runs",
                    json={"agent": agent, "input": data},
                    headers={"Authorization": f"Bearer {self.keys[agent]}", "Idempotency-Key": key},
                )
            except httpx.HTTPError as exc:
                self.answers[type(exc).__name__] += 1
                return None
            self.answers[response.status_code] += 1
            return response.json()["id"] if response.status_code in (200, 201) else None

        return wait_for(
            accepted, timeout=120, interval=0.3, message=lambda: f"the API to accept run {key}: {self.answers}"
        )


def restart_inputs(count: int) -> list[tuple[str, dict]]:
    """Two in three chaos-ledger runs (two side effects each), one in three support-refund (an email a reviewer
    approves); both call the mock for their plans and answers."""
    orders = iter(delivered_orders(count // 3 + 1))
    inputs = []
    for i in range(count):
        if i % 3 == 2:
            inputs.append(("support-refund", {"order_id": next(orders), "message": f"It broke ({i}).", "amount": 5}))
        else:
            inputs.append(("chaos-ledger", {"account": f"acct-{i}", "ack_seconds": 0.05}))
    return inputs


def test_restart_redis_then_postgres_under_load(stack, mocked_models, local_services, scale, mock, request):
    started = time.monotonic()
    restarts_before = dict(local_services.restarts)
    keys = {
        agent: key_actions.create_api_key(agent, scopes=["runs"])[1] for agent in ("chaos-ledger", "support-refund")
    }
    reviewer = Reviewer()
    inputs = restart_inputs(scale.restart_runs)
    client = AgentClient(stack.web.extra["url"], keys, inputs, interval=0.15)
    outages: list[dict] = []
    try:
        client.start()
        restart_under_load(stack, local_services, client, reviewer, outages, scale)
    finally:
        client.stop = True
        run_ids = sorted(client.runs.values())
        report = retry_database(lambda: account(run_ids, mock))
        record_row(
            request,
            "restart Redis, then PostgreSQL",
            runs=len(run_ids),
            **{
                "kills/restarts": " ".join(
                    f"{name}×{local_services.restarts[name] - restarts_before[name]}" for name in ("redis", "postgres")
                )
                + f" ({scale.down_seconds:g} s down each; workers that crashed: {len(client.crashed)})",
                "terminal": " ".join(f"{k}={v}" for k, v in sorted(report["final"].items())),
                "duplicate effects": report["effects"].duplicates,
                "re-executed steps": report["again"],
                "records lost": f"usage {report['usage lost']}, escalations {len(report['escalations']['lost'])}, "
                f"decisions {len(report['escalations']['decision_not_on_step'])}",
                "seconds": round(time.monotonic() - started, 1),
            },
        )
        print("API answers:", dict(client.answers), "reviewer errors:", dict(reviewer.errors), "outages:", outages)
        print("workers that exited on their own and were started again:", client.crashed)

    final, effects, escalations = report["final"], report["effects"], report["escalations"]
    assert len(run_ids) == len(inputs) == Run.objects.filter(idempotency_key__startswith="chaos-").count()
    # A run whose journal or reservation met the outage went back to the queue and finished afterwards:
    # an infrastructure blip fails no run.
    assert final == {"succeeded": len(run_ids)}, {
        run.pk: (run.status, run.error_class, run.error[:200])
        for run in Run.objects.filter(pk__in=run_ids).exclude(status="succeeded")[:10]
    }
    assert client.crashed == [], f"workers stopped when Redis or PostgreSQL went away: {client.crashed}"
    assert effects.duplicates == 0 and not effects.orphans and not effects.missing, effects
    assert_escalations_whole(escalations)
    assert escalations["decided"] == escalations["escalations"] == len(inputs) // 3
    assert report["usage lost"] == 0, f"the mock answered {report['usage lost']} calls the ledger does not have"
    counter = wait_for(
        lambda: _counter_once_nothing_is_held(mocked_models),
        timeout=30,
        interval=0.5,
        message="the reservations of calls cut off by an outage to be given back",
    )
    ledger = usage_totals()
    assert (counter.reserved_tokens, counter.reserved_usd, counter.in_flight) == (0, Decimal(0), 0) and (
        counter.spent_tokens,
        counter.spent_usd,
    ) == (ledger["tokens"], ledger["usd"]), "the budget counters do not match the ledger"
    ready = httpx.get(stack.web.extra["url"] + "/readyz", timeout=5)
    assert ready.status_code == 200, ready.text


def restart_under_load(stack, local_services, client, reviewer, outages: list[dict], scale) -> None:
    """Redis goes away once a quarter of the runs were asked for; PostgreSQL once half were and the stack has
    recovered from that (a run started after Redis came back has finished, or 30 s passed). Then every run
    must reach a terminal state."""
    for n in range(scale.restarts):
        first, last = n / scale.restarts, (n + 1) / scale.restarts
        for which, share in (("redis", first + (last - first) / 4), ("postgres", first + (last - first) / 2)):
            recovery_deadline = time.monotonic() + 30
            while len(client.runs) < share * len(client.inputs) or not (
                _recovered(client, outages) or time.monotonic() > recovery_deadline
            ):
                _keep_working(client, reviewer, stack)
            outages.append({"service": which, "after run": max(client.runs.values(), default=0)})
            restart = threading.Thread(target=local_services.restart, args=(which, scale.down_seconds))
            restart.start()
            while restart.is_alive():
                _keep_working(client, reviewer, stack)
    while client.is_alive():
        _keep_working(client, reviewer, stack)
    assert client.error is None, client.error
    progress = Progress(sorted(client.runs.values()), stall_seconds=30, timeout=scale.settle_timeout)

    def settled() -> bool:
        if retry_database(progress.done):
            return True
        _keep_working(client, reviewer, stack)  # it sleeps 0.1 s
        return False

    wait_for(settled, timeout=progress.timeout + progress.stall_seconds, interval=0, message=progress.describe)


def account(run_ids: list[int], mock) -> dict:
    return {
        "final": statuses(run_ids),
        "effects": effect_report(run_ids),
        "escalations": escalation_report(run_ids),
        "again": sum(reexecuted_steps(run_ids).values()),
        # every call the mock answered (it has no faults here) must have its ledger row
        "usage lost": mock.stats()["requests"] - usage_totals(provider="mock", cached=False)["rows"],
    }


def _keep_working(client: AgentClient, reviewer: Reviewer, stack) -> None:
    assert client.error is None, client.error
    client.crashed += stack.ensure_workers()
    assert time.monotonic() < client.deadline, "the stack did not recover from the outage:\n" + retry_database(
        lambda: describe_stuck(sorted(client.runs.values()))
    )
    retry_database(reviewer.work)
    time.sleep(0.1)


def _recovered(client: AgentClient, outages: list[dict]) -> bool:
    """A run started after the last outage has finished: workers, web and beat are back."""
    if not outages:
        return True
    later = [pk for pk in client.runs.values() if pk > outages[-1]["after run"]]
    return bool(later) and retry_database(lambda: Run.objects.filter(pk__in=later, status__in=Run.TERMINAL).exists())


def _counter_once_nothing_is_held(budget: Budget) -> BudgetCounter | None:
    """The budget's global counter once no reservation is held (beat gives back the reservations of calls
    cut off by an outage when their lease ends); then it must hold nothing and equal the ledger."""
    if Reservation.objects.filter(status=Reservation.Status.HELD).exists():
        return None
    return BudgetCounter.objects.filter(budget=budget).first()
