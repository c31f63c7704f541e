"""Alerts fire once per crossing, appear live on the `alerts` group, can be acknowledged, and reach
webhooks through a real Celery worker with retries and a delivery log (issue #6, DESIGN.md §7, §9).

Real PostgreSQL, Redis, Channels layer and Celery worker; the only stand-in is the webhook receiver, a
real HTTP server on a loopback port (the network edge).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from agentops.runtime.protocols import BudgetExceeded
from budgets.actions import alerts as alert_actions
from budgets.actions import budgets as budget_actions
from budgets.actions import call_counts, ledger, reservations, webhooks
from budgets.actions import webhooks as webhook_actions
from budgets.models import (
    Alert,
    AlertSettings,
    Budget,
    BudgetCounter,
    ModelPrice,
    Reservation,
    UsageRecord,
    Webhook,
    WebhookDelivery,
)
from tests.fixtures.factories import make_budget, make_run
from tests.fixtures.live import first_event
from tests.fixtures.people import BEA
from tests.fixtures.runtime import free_port
from tests.fixtures.stack import Proc, start_worker
from tests.fixtures.waiting import wait_for
from tests.integration.budgets.conftest import delivery_in

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "alerts-test-model"  # $0.01 per 1K tokens in and out: 1000 tokens cost one cent
WEBHOOK_MAX_RETRIES = 3  # the worker below: 4 attempts at most, 0.05 s, 0.1 s, 0.2 s apart


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def clean(redis_client) -> Iterator[None]:
    """A known starting point: no budgets, alerts or webhooks (the first transactional test still sees the
    migration's seed budgets), one price, default alert settings, no error-rate episode in Redis."""
    WebhookDelivery.objects.all().delete()
    Webhook.objects.all().delete()
    Alert.objects.all().delete()
    Reservation.objects.all().delete()
    UsageRecord.objects.all().delete()
    BudgetCounter.objects.all().delete()
    Budget.objects.all().delete()
    ModelPrice.objects.get_or_create(
        model=MODEL,
        effective_from=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        defaults={"input_per_1k": Decimal("0.01"), "output_per_1k": Decimal("0.01")},
    )
    AlertSettings.objects.all().delete()
    AlertSettings.current()
    yield


@pytest.fixture(scope="module")
def alert_worker(_workers, stack_env, logdir) -> Iterator[Proc]:
    """A real Celery worker with fast webhook retries. The session's shared worker would take the same
    tasks off the queue with production backoff (2 s, 4 s, ...), so it is stopped first; the `worker`
    fixture starts it again for whichever test needs it next."""
    shared = _workers.get("w1")
    if shared is not None:
        shared.stop()
    env = {**stack_env, "WEBHOOK_RETRY_BASE_SECONDS": "0.05", "WEBHOOK_MAX_RETRIES": str(WEBHOOK_MAX_RETRIES)}
    proc = start_worker(env, logdir, name="alerts", concurrency=2)
    yield proc
    proc.stop()


# --- helpers -----------------------------------------------------------------------------------------


def spend(
    tokens: int, *, session: str = "", estimate: int | None = None, now: dt.datetime | None = None, agent: str = ""
):
    """One LLM call the way the guard makes it: reserve the estimate, settle the actual usage."""
    meta = {
        "agent": agent,
        "session": session,
        "model": MODEL,
        "operation": "call",
        "estimated_tokens": estimate or tokens,
    }
    usage = {"model": MODEL, "input_tokens": tokens, "output_tokens": 0, "operation": "call"}
    reservation = reservations.reserve(meta, now=now)
    if reservation is None:
        return ledger.record_usage({**meta, **usage}, now=now)
    return ledger.settle(reservation, usage, now=now)


def alerts(kind: str, **filters) -> list[Alert]:
    return list(Alert.objects.filter(kind=kind, **filters).order_by("id"))


def set_alert_settings(**fields) -> AlertSettings:
    config = AlertSettings.current()
    for name, value in fields.items():
        setattr(config, name, value)
    return webhooks.save_alert_settings(config)


# --- budget alerts: once per crossing ----------------------------------------------------------------


def test_soft_threshold_fires_once_per_crossing_and_raising_the_limit_rearms():
    budget = make_budget("soft-day", limit_tokens=1000)
    spend(700)
    assert alerts("soft_threshold") == []  # 70 %

    spend(100)  # 80 %: crossed on settle, no beat needed
    [alert] = alerts("soft_threshold")
    assert alert.budget_id == budget.pk
    assert alert.severity == "warning"
    assert alert.details["utilization"] == 0.8
    assert "passed 80%" in alert.message

    for _ in range(3):
        spend(50)
    for _ in range(3):
        alert_actions.evaluate_alerts()
    assert len(alerts("soft_threshold")) == 1  # 95 % now, still the same crossing

    budget.limit_tokens = 2000
    budget_actions.save_budget(budget)
    alert_actions.evaluate_alerts()
    assert len(alerts("soft_threshold")) == 1  # 950 of 2000 = 47.5 %: re-armed, not crossed

    spend(700)  # 1650 of 2000 = 82.5 %
    alert_actions.evaluate_alerts()
    first, second = alerts("soft_threshold")
    assert second.details["utilization"] == 0.825
    assert first.dedup_key != second.dedup_key

    # Lowering the soft threshold is a new line to cross as well.
    budget.soft_threshold_pct = 50
    budget_actions.save_budget(budget)
    alert_actions.evaluate_alerts()
    alert_actions.evaluate_alerts()
    assert len(alerts("soft_threshold")) == 3
    assert "passed 50%" in alerts("soft_threshold")[-1].message


def test_a_day_budget_over_its_limit_fires_one_daily_over():
    make_budget("alert-only-day", limit_tokens=1000, hard_stop=False)
    make_budget("alert-only-month", limit_tokens=1000, hard_stop=False, period="month")
    spend(600)
    assert alerts("daily_over") == []
    spend(600)  # 120 %: an alert-only budget lets the call through
    for _ in range(3):
        spend(300)
        alert_actions.evaluate_alerts()

    [daily] = alerts("daily_over")
    assert daily.budget.name == "alert-only-day"  # a month budget over its limit is no *daily* total
    assert daily.severity == "critical"
    assert daily.details["utilization"] == 1.2
    assert sorted(a.budget.name for a in alerts("soft_threshold")) == ["alert-only-day", "alert-only-month"]


def test_hard_limit_refusals_fire_one_exhausted_alert_and_a_raised_limit_rearms_it():
    budget = make_budget("hard-day", limit_tokens=1000)
    spend(900)
    for _ in range(5):
        with pytest.raises(BudgetExceeded):
            spend(200)
    [exhausted] = alerts("exhausted")
    assert exhausted.budget_id == budget.pk
    assert exhausted.severity == "critical"
    assert "exhausted" in exhausted.message
    alert_actions.evaluate_alerts()
    assert len(alerts("exhausted")) == 1

    budget.limit_tokens = 1050
    budget_actions.save_budget(budget)
    with pytest.raises(BudgetExceeded):
        spend(200)  # refused against the new limit: a new crossing
    with pytest.raises(BudgetExceeded):
        spend(200)
    assert len(alerts("exhausted")) == 2
    spend(100)  # what still fits is admitted
    assert BudgetCounter.objects.get(budget=budget).spent_tokens == 1000


def test_an_alert_rolled_back_with_its_transaction_fires_on_the_next_call():
    with pytest.raises(RuntimeError), transaction.atomic():
        assert alert_actions.fire_alert(Alert.Kind.EXHAUSTED, "rolled-back", "first try") is not None
        raise RuntimeError("the caller's transaction fails")
    assert not Alert.objects.filter(dedup_key="rolled-back").exists()

    assert alert_actions.fire_alert(Alert.Kind.EXHAUSTED, "rolled-back", "second try") is not None
    assert alert_actions.fire_alert(Alert.Kind.EXHAUSTED, "rolled-back", "third try") is None
    assert list(Alert.objects.values_list("message", flat=True)) == ["second try"]


# --- session spike and error rate ---------------------------------------------------------------------


def test_session_spike_counts_only_the_last_hour_and_fires_once():
    set_alert_settings(session_spike_usd=Decimal("0.05"))
    now = timezone.now()
    spend(10_000, session="s-old", now=now - dt.timedelta(hours=2))  # $0.10, but two hours ago
    spend(1_000, session="s-old")  # $0.01 in the last hour
    spend(4_000, session="s-calm")  # $0.04: under the threshold
    spend(3_000, session="s-hot", now=now - dt.timedelta(minutes=40))
    alert_actions.evaluate_alerts()
    assert alerts("session_spike") == []

    spend(3_000, session="s-hot")  # $0.06 in the last hour
    for _ in range(3):
        alert_actions.evaluate_alerts()
        spend(1_000, session="s-hot")
    [spike] = alerts("session_spike")
    assert spike.subject == "s-hot"
    assert Decimal(spike.details["cost_usd"]) == Decimal("0.06")
    assert spike.details["threshold_usd"] == "0.0500"


def test_a_session_spike_is_one_agents_session():
    """Two agents that pick the same session id are two sessions: neither spent over the threshold."""
    set_alert_settings(session_spike_usd=Decimal("0.05"))
    spend(4_000, session="s-shared", agent="amy")  # $0.04
    spend(4_000, session="s-shared", agent="bob")  # $0.04: $0.08 under one id, but two sessions
    alert_actions.evaluate_alerts()
    assert alerts("session_spike") == []
    spend(2_000, session="s-shared", agent="bob")  # bob's session: $0.06
    alert_actions.evaluate_alerts()
    [spike] = alerts("session_spike")
    assert (spike.subject, spike.details["agent"]) == ("s-shared", "bob")
    assert spike.message.startswith("session s-shared of agent bob spent $0.0600")


def _steps(run, *, completed: int = 0, failed: int = 0, kind: str = "llm", at: dt.datetime | None = None) -> None:
    from agentops.runs.models import Step

    at = at or timezone.now()
    seq = Step.objects.filter(run=run).count()
    rows = [("completed", n) for n in range(completed)] + [("failed", n) for n in range(failed)]
    Step.objects.bulk_create(
        Step(run=run, seq=seq + i, kind=kind, name="chat", status=status, finished_at=at)
        for i, (status, _) in enumerate(rows)
    )


@pytest.fixture
def quiet_calls(redis_client) -> Iterator[None]:
    """No call counts but the test's own: other processes' pending counts are flushed within half a second."""
    call_counts.call_counts().flush()
    time.sleep(call_counts.FLUSH_INTERVAL + 0.2)
    keys = list(redis_client.scan_iter(f"{call_counts.KEY_PREFIX}*"))
    if keys:
        redis_client.delete(*keys)
    yield


def _calls(ok: int = 0, failed: int = 0, *, ago: float = 0.0) -> None:
    """LLM calls the way the guard counts them (``ago`` seconds in the past), sent to Redis now."""
    counts = call_counts.CallCounts(clock=lambda: time.time() - ago)
    counts.count("success", ok)
    counts.count("failed", failed)
    counts.flush()


def test_the_seeds_alert_thresholds_are_the_defaults():
    """DESIGN.md §11: a daily-budget alert at $100, a session spike of $10 in one hour, > 10 % over 5 minutes."""
    config = AlertSettings.current()
    assert config.daily_spend_usd == Decimal("100.00")
    assert config.session_spike_usd == Decimal("10.00")
    assert (config.error_rate_pct, alert_actions.ERROR_RATE_WINDOW) == (10, dt.timedelta(minutes=5))
    help_text = str(AlertSettings._meta.get_field("session_spike_usd").help_text)
    assert help_text.startswith("US dollars: alert when one session") and "in the last hour" in help_text


def test_the_daily_spend_alert_fires_once_a_day_over_its_threshold():
    set_alert_settings(daily_spend_usd=Decimal("0.10"))
    now = timezone.now()
    spend(20_000, now=now - dt.timedelta(days=1))  # $0.20 yesterday
    spend(6_000, session="s-a")  # $0.06 today, a run's call
    ledger.record_usage({"model": MODEL, "input_tokens": 3_000, "operation": "x", "source": "gateway"})  # $0.03
    alert_actions.evaluate_alerts()
    assert alerts("daily_over") == [] and alert_actions.today_spend(now) == Decimal("0.09")

    ledger.record_usage({"model": MODEL, "input_tokens": 2_000, "operation": "x", "source": "api"})  # $0.11 today
    alert_actions.evaluate_alerts()
    alert_actions.evaluate_alerts()
    [alert] = alerts("daily_over")
    assert alert.severity == "critical" and Decimal(alert.details["spent_usd"]) == Decimal("0.11")
    assert alert.message == "all agents together spent $0.11 today, over the daily alert of $0.10"


def test_error_rate_over_ten_percent_fires_once_per_episode(quiet_calls):
    set_alert_settings(error_rate_pct=10, error_rate_min_calls=10)
    _calls(ok=5, failed=1, ago=330)  # outside the window
    _calls(ok=5, failed=1)  # 1 of 6: too few calls to judge
    alert_actions.evaluate_alerts()
    _calls(ok=4)  # 1 of 10 = 10 %: not more than 10 %
    alert_actions.evaluate_alerts()
    assert alerts("error_rate") == []

    _calls(failed=1)  # 2 of 11 = 18 %
    alert_actions.evaluate_alerts()
    _calls(failed=2)  # still the same episode
    alert_actions.evaluate_alerts()
    alert_actions.evaluate_alerts()
    [first] = alerts("error_rate")
    assert first.severity == "critical"
    assert first.details == {"failed": 2, "total": 11, "rate": 0.1818}

    _calls(ok=40)  # 4 of 53 = 7.5 %: the episode ends
    alert_actions.evaluate_alerts()
    assert len(alerts("error_rate")) == 1

    _calls(failed=10)  # 14 of 63 = 22 %: a new episode
    alert_actions.evaluate_alerts()
    alert_actions.evaluate_alerts()
    assert len(alerts("error_rate")) == 2


def test_error_rate_exactly_at_the_threshold_is_not_over(quiet_calls):
    set_alert_settings(error_rate_pct=14, error_rate_min_calls=10)
    _calls(ok=43, failed=7)  # exactly 14 % (in floats 7 / 50 * 100 is 14.000000000000002)
    alert_actions.evaluate_alerts()
    assert alerts("error_rate") == []
    _calls(failed=1)  # 8 of 51 = 15.7 %
    alert_actions.evaluate_alerts()
    assert len(alerts("error_rate")) == 1


def test_refusals_and_waits_are_not_calls_and_redis_down_falls_back_to_run_steps(quiet_calls, monkeypatch):
    from agentops.runs.models import Run

    counts = call_counts.CallCounts()
    for outcome in ("budget_exceeded", "pending", "rejected"):
        counts.count(outcome, 50)
    for outcome in ("success", "fallback", "cache_hit", "human", "disconnected"):
        counts.count(outcome)
    counts.count("error", 2)
    counts.flush()
    assert call_counts.window(300) == (7, 2)

    def unreachable(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(call_counts, "window", unreachable)
    run = make_run("alerts-agent", Run.Status.RUNNING)
    _steps(run, failed=30, kind="tool")  # tool failures are not LLM calls
    _steps(run, completed=8, failed=2)
    assert alert_actions.llm_calls(timezone.now()) == (10, 2)


# --- live, acknowledge --------------------------------------------------------------------------------


def test_a_fired_alert_appears_on_the_alerts_group_after_commit():
    make_budget("live-day", limit_tokens=1000)

    def roll_back_one_then_cross_a_threshold():
        try:
            with transaction.atomic():
                alert_actions.fire_alert(Alert.Kind.EXHAUSTED, "never-committed", "rolled back")
                raise RuntimeError
        except RuntimeError:
            pass
        spend(850)

    message, _ = first_event("alerts", "alert.fired", roll_back_one_then_cross_a_threshold)
    [alert] = alerts("soft_threshold")
    assert message["group"] == "alerts"
    assert message["data"] == {"alert": alert.pk, "kind": "soft_threshold", "message": alert.message}


def test_acknowledge_once_then_all():
    user = BEA.user()
    first, *_ = [alert_actions.fire_alert(Alert.Kind.SESSION_SPIKE, f"ack-{i}", f"spike {i}") for i in range(3)]

    assert alert_actions.acknowledge_alert(first.pk, user) is True
    assert alert_actions.acknowledge_alert(first.pk, user) is False
    assert alert_actions.acknowledge_alert(999_999_999, user) is False
    first.refresh_from_db()
    assert first.acknowledged_by == user and first.acknowledged_at is not None

    assert alert_actions.acknowledge_all(user) == 2
    assert alert_actions.acknowledge_all(user) == 0
    assert Alert.objects.filter(acknowledged_at=None).count() == 0
    assert set(Alert.objects.values_list("acknowledged_by", flat=True)) == {user.pk}


# --- webhooks through the real worker -----------------------------------------------------------------


def test_webhook_is_retried_on_500_and_every_attempt_is_logged(alert_worker, receiver):
    url = receiver.path([500, 500, 200])
    hook = webhooks.save_webhook(Webhook(name="slack", url=url))
    budget = make_budget("webhook-day", limit_tokens=1000)
    spend(850)  # crosses the soft threshold on settle; delivery runs in the worker after commit
    [alert] = alerts("soft_threshold")

    delivery = wait_for(delivery_in(alert, hook, "delivered", "failed"))
    assert delivery.status == "delivered"
    assert delivery.attempts == 3
    assert [entry["status_code"] for entry in delivery.log] == [500, 500, 200]
    assert "HTTP 500" in delivery.log[0]["error"] and delivery.log[2]["error"] == ""
    assert delivery.last_status_code == 200 and delivery.delivered_at is not None

    bodies = receiver.received(url)
    assert len(bodies) == 3 and bodies[0] == bodies[2]
    body = bodies[-1]
    assert alert.message in body["text"]  # what Slack shows
    assert body["agentops"]["alert_id"] == alert.pk
    assert body["agentops"]["kind"] == "soft_threshold"
    assert body["agentops"]["severity"] == "warning"
    assert body["agentops"]["budget"] == budget.name
    assert body["agentops"]["details"]["utilization"] == 0.85

    spend(50)  # the same crossing: no new alert, nothing more sent
    alert_actions.evaluate_alerts()
    assert WebhookDelivery.objects.count() == 1


def test_a_receiver_that_keeps_failing_ends_failed_after_the_last_retry(alert_worker, receiver):
    down = webhooks.save_webhook(Webhook(name="down", url=receiver.path([500])))
    closed = webhooks.save_webhook(Webhook(name="closed", url=f"http://127.0.0.1:{free_port()}/hook"))
    alert = alert_actions.fire_alert(Alert.Kind.EXHAUSTED, "wh-failing", "budget X is exhausted", severity="critical")

    failed = wait_for(delivery_in(alert, down, "failed"))
    assert failed.attempts == 1 + WEBHOOK_MAX_RETRIES
    assert [entry["status_code"] for entry in failed.log] == [500] * (1 + WEBHOOK_MAX_RETRIES)
    assert failed.last_error.startswith("HTTP 500") and failed.delivered_at is None
    assert len(receiver.received(down.url)) == 1 + WEBHOOK_MAX_RETRIES

    unreachable = wait_for(delivery_in(alert, closed, "failed"))
    assert unreachable.attempts == 1 + WEBHOOK_MAX_RETRIES
    assert unreachable.last_status_code is None and "ConnectError" in unreachable.last_error


def test_min_severity_and_disabled_webhooks_are_skipped(alert_worker, receiver):
    everything = webhooks.save_webhook(Webhook(name="everything", url=receiver.path([200])))
    critical_only = webhooks.save_webhook(Webhook(name="pager", url=receiver.path([200]), min_severity="critical"))
    disabled = webhooks.save_webhook(Webhook(name="off", url=receiver.path([200]), enabled=False))

    with pytest.raises(RuntimeError), transaction.atomic():  # rolled back: nothing is ever enqueued
        alert_actions.fire_alert(Alert.Kind.EXHAUSTED, "wh-rolled-back", "never committed", severity="critical")
        raise RuntimeError
    warning = alert_actions.fire_alert(Alert.Kind.SOFT_THRESHOLD, "wh-warning", "80 % used")
    critical = alert_actions.fire_alert(Alert.Kind.EXHAUSTED, "wh-critical", "exhausted", severity="critical")

    wait_for(delivery_in(warning, everything, "delivered"))
    wait_for(delivery_in(critical, everything, "delivered"))
    wait_for(delivery_in(critical, critical_only, "delivered"))
    assert set(WebhookDelivery.objects.values_list("alert__dedup_key", "webhook__name")) == {
        ("wh-warning", "everything"),
        ("wh-critical", "everything"),
        ("wh-critical", "pager"),
    }
    assert [body["agentops"]["alert_id"] for body in receiver.received(critical_only.url)] == [critical.pk]
    assert sorted(body["agentops"]["alert_id"] for body in receiver.received(everything.url)) == [
        warning.pk,
        critical.pk,
    ]
    assert receiver.received(disabled.url) == []


def test_send_test_alert_delivers_only_to_that_webhook(alert_worker, receiver):
    user = BEA.user()
    chosen = webhook_actions.save_webhook(Webhook(name="chosen", url=receiver.path([200]), min_severity="critical"))
    other = webhook_actions.save_webhook(Webhook(name="other", url=receiver.path([200])))

    alert = webhook_actions.send_test_alert(chosen, user)
    delivery = wait_for(delivery_in(alert, chosen, "delivered", "failed"))
    assert delivery.status == "delivered" and delivery.attempts == 1
    assert alert.kind == "test" and alert.acknowledged_at is not None  # nothing left open in the alert list
    [body] = receiver.received(chosen.url)
    assert "chosen" in body["text"] and body["agentops"]["kind"] == "test"
    assert not WebhookDelivery.objects.filter(webhook=other).exists()
    assert receiver.received(other.url) == []


def test_a_delivery_whose_task_was_lost_is_requeued_by_beat(alert_worker, receiver):
    url = receiver.path([200])
    hook = webhooks.save_webhook(Webhook(name="lost", url=url))
    long_ago = timezone.now() - dt.timedelta(minutes=10)
    alert = Alert.objects.create(
        kind="test", message="queued while Redis was down", dedup_key="lost-delivery", created_at=long_ago
    )
    # As if the enqueue after commit failed: the row exists, no task does.
    WebhookDelivery.objects.create(webhook=hook, alert=alert, created_at=long_ago, updated_at=long_ago)
    assert webhook_actions.requeue_stalled_deliveries() == 1
    assert webhook_actions.requeue_stalled_deliveries() == 0  # just handed over: not stalled again at once
    delivery = wait_for(delivery_in(alert, hook, "delivered", "failed"))
    assert delivery.status == "delivered" and delivery.attempts == 1
    assert receiver.received(url)[0]["text"].endswith("queued while Redis was down")
