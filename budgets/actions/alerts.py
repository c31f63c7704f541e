"""Alerts: raised once per crossing (soft threshold, a day's total over its limit, an exhausted budget, a
session's spike, the error rate), announced live and handed to the webhooks after commit; acknowledged
by people."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import structlog
from django.db import IntegrityError, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from agentops.lib import live
from agentops.lib.queue import enqueue_on_commit
from agentops.lib.redis import runtime_redis
from agentops.observability import metrics
from agentops.runs.models import Step
from budgets.actions import call_counts
from budgets.actions.counters import CounterRow, publish_budgets
from budgets.actions.directory import describe, session_subject
from budgets.actions.periods import period_start
from budgets.models import Alert, AlertSettings, Budget, BudgetCounter, UsageRecord, Webhook, WebhookDelivery

log = structlog.get_logger(__name__)


def _limits(budget: Budget) -> str:
    return f"{budget.limit_tokens or '-'}t/{budget.limit_usd or '-'}usd"


def _counter_key(kind: str, budget: Budget, subject: str, start: dt.datetime) -> str:
    """One alert per kind × budget × subject × period × limits: raising a limit re-arms the alert."""
    return f"{kind}:{budget.id}:{subject}:{start.isoformat()}:{_limits(budget)}"


def alert_exhausted(budget: Budget, counter: CounterRow) -> None:
    """A hard limit refused a call: one critical alert per budget, subject, period and limits."""
    fire_alert(
        Alert.Kind.EXHAUSTED,
        _counter_key("exhausted", budget, counter.subject, counter.period_start),
        f"{describe(budget, counter.subject)} is exhausted: calls are being refused",
        budget=budget,
        subject=counter.subject,
        severity=Alert.Severity.CRITICAL,
        details={"period_start": counter.period_start.isoformat()},
    )


def fire_alert(
    kind: str,
    dedup_key: str,
    message: str,
    *,
    budget: Budget | None = None,
    subject: str = "",
    severity: str = Alert.Severity.WARNING,
    details: Mapping[str, Any] | None = None,
) -> Alert | None:
    """Create the alert for one crossing, once: while an alert with this key exists, another call does
    nothing and returns None. A new alert is announced live and handed to every enabled webhook after
    commit. The committed row is the only memory of a crossing (no per-process cache): an alert whose
    transaction rolled back fires again on the next call, and a deleted one (a flushed test database) never
    silences its key."""
    key = dedup_key[:300]
    # The common call after a crossing (every later settle, every refusal): one indexed read, no INSERT.
    if Alert.objects.filter(dedup_key=key).exists():
        return None
    with transaction.atomic():
        alert, created = _insert_alert_once(
            kind=kind,
            dedup_key=key,
            message=message[:500],
            budget=budget,
            subject=subject[:200],
            severity=severity,
            details=dict(details or {}),
            created_at=timezone.now(),
        )
        if not created:
            return None
        log.warning("budget.alert", kind=kind, alert_id=alert.pk, message=message)
        transaction.on_commit(lambda: metrics.ALERTS_FIRED.labels(kind=kind).inc(), robust=True)
        announce(alert, Webhook.objects.filter(enabled=True))
    return alert


def _insert_alert_once(**fields: Any) -> tuple[Alert, bool]:
    try:
        with transaction.atomic():
            return Alert.objects.create(**fields), True
    except IntegrityError:
        return Alert.objects.get(dedup_key=fields["dedup_key"]), False


SEVERITY_RANK = {Alert.Severity.INFO: 0, Alert.Severity.WARNING: 1, Alert.Severity.CRITICAL: 2}


def announce(alert: Alert, webhooks: Iterable[Webhook]) -> None:
    """Inside the alert's transaction: a delivery row for each webhook whose minimum severity the alert
    meets (every one for a test alert), the live event, and each delivery's task after commit."""
    now = timezone.now()
    deliveries = [
        WebhookDelivery.objects.create(webhook=hook, alert=alert, created_at=now, updated_at=now)
        for hook in webhooks
        if SEVERITY_RANK[hook.min_severity] <= SEVERITY_RANK[alert.severity] or alert.kind == Alert.Kind.TEST
    ]
    live.publish("alerts", "alert.fired", {"alert": alert.pk, "kind": alert.kind, "message": alert.message})
    for delivery in deliveries:
        # robust: a broker that refuses the send fails neither the committed caller nor the callbacks after
        # this one; beat's requeue_stalled_deliveries sends it later.
        enqueue_on_commit("budgets.deliver_webhook", delivery.pk, robust=True)


def acknowledge_alert(alert_id: int, user) -> bool:
    """Mark an alert seen. False if it was already acknowledged (or does not exist)."""
    with transaction.atomic():
        updated = Alert.objects.filter(pk=alert_id, acknowledged_at=None).update(
            acknowledged_at=timezone.now(), acknowledged_by=user
        )
        if updated:
            live.publish("alerts", "alert.acknowledged", {"alert": alert_id})
    return bool(updated)


def acknowledge_all(user) -> int:
    with transaction.atomic():
        updated = Alert.objects.filter(acknowledged_at=None).update(
            acknowledged_at=timezone.now(), acknowledged_by=user
        )
        if updated:
            live.publish("alerts", "alert.acknowledged", {"count": updated})
    return updated


def after_spend(counter_ids: list[int]) -> None:
    """After a committed spend: announce it, raise the threshold alerts it crossed. Never raises: the
    spend is already committed, and a caller that saw an error here could settle again and count the usage
    twice; an alert missed here is raised by the next beat evaluation."""
    try:
        publish_budgets()
        if counter_ids:
            evaluate_counter_alerts(BudgetCounter.objects.filter(pk__in=counter_ids).select_related("budget"))
    except Exception as exc:
        log.error("budget.alert_evaluation_failed", error=repr(exc)[:300])


# Dedup keys seen committed in the database, remembered briefly: while a budget stays over its threshold
# every settle lands in evaluate_counter_alerts, and a busy process would read the same alert rows each
# time. Only keys read back from committed rows are remembered, so a rolled-back alert is never silenced;
# a deleted one is forgotten after RAISED_TTL.
RAISED_TTL = 10.0
_RAISED: dict[str, float] = {}


def evaluate_counter_alerts(counters: Iterable[BudgetCounter]) -> int:
    """Soft threshold crossed and (day budgets) daily total over its limit, once per crossing: per budget,
    subject, period and limits (raising a limit or changing the soft threshold re-arms)."""
    candidates: list[tuple[str, str, str, dict[str, Any]]] = []
    for counter in counters:
        budget = counter.budget
        used = utilization(budget, counter.spent_tokens, counter.spent_usd)
        if used is None:
            continue
        metrics.BUDGET_UTILIZATION.labels(budget=budget.name).set(used)
        where = describe(budget, counter.subject)
        details = {"utilization": round(used, 4), "period_start": counter.period_start.isoformat()}
        if used * 100 >= budget.soft_threshold_pct:
            candidates.append(
                (
                    Alert.Kind.SOFT_THRESHOLD,
                    _counter_key(f"soft@{budget.soft_threshold_pct}", budget, counter.subject, counter.period_start),
                    f"{where} passed {budget.soft_threshold_pct}% ({used:.0%} used)",
                    {"budget": budget, "subject": counter.subject, "details": details},
                )
            )
        if budget.period == Budget.Period.DAY and used > 1:
            candidates.append(
                (
                    Alert.Kind.DAILY_OVER,
                    _counter_key("daily_over", budget, counter.subject, counter.period_start),
                    f"{where}: today's total is over its limit ({used:.0%})",
                    {
                        "budget": budget,
                        "subject": counter.subject,
                        "severity": Alert.Severity.CRITICAL,
                        "details": details,
                    },
                )
            )
    if not candidates:
        return 0
    # After a crossing every later settle lands here again: one read for the whole batch finds the alerts
    # already raised, so only a new crossing costs an INSERT.
    keys = [key[:300] for _, key, _, _ in candidates]
    now = time.monotonic()
    if all(_RAISED.get(key, 0.0) > now for key in keys):
        return 0
    known = set(Alert.objects.filter(dedup_key__in=keys).values_list("dedup_key", flat=True))
    for key in known:
        _RAISED[key] = now + RAISED_TTL
    return sum(
        bool(fire_alert(kind, key, message, **fields))
        for kind, key, message, fields in candidates
        if key[:300] not in known
    )


def utilization(budget: Budget, tokens: int, usd: Decimal) -> float | None:
    """The larger of tokens / token limit and dollars / dollar limit (None without limits)."""
    shares = []
    if budget.limit_tokens:
        shares.append(tokens / budget.limit_tokens)
    if budget.limit_usd:
        shares.append(float(usd / budget.limit_usd))
    return max(shares) if shares else None


def evaluate_alerts() -> int:
    """Beat: every current counter against its thresholds, session spikes, the recent error rate."""
    now = timezone.now()
    fired = 0
    current = []
    for budget in Budget.objects.filter(enabled=True):
        for counter in budget.counters.filter(period_start=period_start(budget, now)):
            counter.budget = budget
            current.append(counter)
    fired += evaluate_counter_alerts(current)

    config = AlertSettings.current()
    hour_ago = now - dt.timedelta(hours=1)
    # A session is one agent's (as for session budgets): two agents that pick the same id are two sessions.
    spikes = (
        UsageRecord.objects.filter(created_at__gte=hour_ago)
        .exclude(session_id="")
        .values("agent", "session_id")
        .annotate(cost=Sum("cost_usd"))
        .filter(cost__gt=config.session_spike_usd)
    )
    for row in spikes:
        agent, session = row["agent"], row["session_id"]
        who = f"session {session}" + (f" of agent {agent}" if agent else "")
        fired += bool(
            fire_alert(
                Alert.Kind.SESSION_SPIKE,
                f"session_spike:{session_subject(agent, session)}:{now.date().isoformat()}",
                f"{who} spent ${row['cost']:.4f} in the last hour (threshold ${config.session_spike_usd})",
                subject=session,
                details={
                    "agent": agent,
                    "cost_usd": str(row["cost"]),
                    "threshold_usd": str(config.session_spike_usd),
                },
            )
        )

    fired += _daily_spend_alert(config, now)

    total, failed = llm_calls(now)
    rate = failed / total if total else 0.0
    # Whole numbers: in floats 11 of 20 calls is more than 55 % (0.55 * 100 == 55.00000000000001).
    over = total >= config.error_rate_min_calls and failed * 100 > config.error_rate_pct * total
    fired += _error_rate_alert(over, rate, failed, total, config, now)
    return fired


ERROR_RATE_WINDOW = dt.timedelta(minutes=5)


def llm_calls(now: dt.datetime) -> tuple[int, int]:
    """(calls, failed calls) over the last five minutes: every LLM call, whoever made it — runs and the
    gateway (the guard counts each call it ends) and usage agents report (``/api/v1/usage``) — from the shared
    counts in Redis (budgets.actions.call_counts). Redis unreadable: the run steps in PostgreSQL (runs only)."""
    try:
        return call_counts.window(ERROR_RATE_WINDOW.total_seconds(), now=now.timestamp())
    except Exception as exc:
        log.warning("budget.call_counts_unavailable", error=repr(exc)[:300])
    calls = Step.objects.filter(kind="llm", finished_at__gte=now - ERROR_RATE_WINDOW).aggregate(
        total=Count("id", filter=Q(status__in=("completed", "failed"))), failed=Count("id", filter=Q(status="failed"))
    )
    return calls["total"] or 0, calls["failed"] or 0


def today_spend(now: dt.datetime) -> Decimal:
    """What every agent spent today (the server's time zone), from the ledger: runs, gateway and reports."""
    start = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return UsageRecord.objects.filter(created_at__gte=start).aggregate(cost=Sum("cost_usd"))["cost"] or Decimal(0)


def _daily_spend_alert(config: AlertSettings, now: dt.datetime) -> int:
    """The seed's daily-budget alert: once a day, when all agents together spent more than the threshold."""
    threshold = config.daily_spend_usd
    if not threshold:
        return 0
    spent = today_spend(now)
    if spent <= threshold:
        return 0
    day = timezone.localdate(now).isoformat()
    return bool(
        fire_alert(
            Alert.Kind.DAILY_OVER,
            f"daily_spend:{day}:{threshold}",
            f"all agents together spent ${spent:.2f} today, over the daily alert of ${threshold:.2f}",
            severity=Alert.Severity.CRITICAL,
            details={"spent_usd": str(spent), "threshold_usd": str(threshold), "day": day},
        )
    )


ERROR_RATE_STATE_KEY = "agentops:alerts:error_rate:since"


def _error_rate_alert(over: bool, rate: float, failed: int, total: int, config: AlertSettings, now) -> int:
    """One alert per episode: the episode starts when the rate goes over and ends when it comes back."""
    redis = runtime_redis()
    try:
        episode = redis.get(ERROR_RATE_STATE_KEY)
        if not over:
            if episode is not None:
                redis.delete(ERROR_RATE_STATE_KEY)
            return 0
        if episode is None:
            # NX: two evaluations running at once agree on one episode (and so on one alert).
            redis.set(ERROR_RATE_STATE_KEY, now.isoformat(), nx=True)
            episode = redis.get(ERROR_RATE_STATE_KEY) or now.isoformat().encode()
    except Exception as exc:  # Redis down: dedup by the 5-minute window instead
        log.warning("budget.error_rate_state_unavailable", error=repr(exc))
        episode = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0).isoformat().encode()
    return bool(
        fire_alert(
            Alert.Kind.ERROR_RATE,
            f"error_rate:{episode.decode()}",
            f"{rate:.0%} of LLM calls failed over the last 5 minutes ({failed} of {total}; threshold "
            f"{config.error_rate_pct}%)",
            severity=Alert.Severity.CRITICAL,
            details={"failed": failed, "total": total, "rate": round(rate, 4)},
        )
    )
