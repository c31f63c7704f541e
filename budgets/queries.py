"""Read-only queries behind the budget list and the cost dashboard. Nothing here writes.

Spend numbers come from the rollups (HourlyUsage, SessionUsage) plus the ledger rows not rolled up yet
(``UsageRecord.rolled_up = false``), so they are current to the last call. ``roll_up_usage`` marks a
ledger row and adds it to the rollups in one statement; each query below reads the rollup and the tail in
ONE SQL statement (one snapshot), so a row is counted either in the rollup or in the tail, never in both
and never in neither, even while a roll-up runs concurrently.

The tail is read in id order through the partial index ``usage_not_rolled`` and capped at ``TAIL_LIMIT``
rows: beat folds it every minute, so it is small; a stuck roll-up makes the newest numbers lag instead of
making every dashboard read scan the ledger.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import structlog
from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from agentops.lib import display
from agentops.runs.models import Agent
from budgets.actions import directory, periods
from budgets.models import Alert, Budget, ModelPrice, UsageRecord, WebhookDelivery
from budgets.presenters import call_rows

log = structlog.get_logger(__name__)

DAYS = 30
TAIL_LIMIT = 100_000
RECENT_CALLS = 20
TOP_SESSIONS = 10
TOP_SESSION_DAYS = 7  # grouping every session of 30 days is the one read that grows with traffic
TOP_SUBJECTS = 5
ALERTS_SHOWN = 100
DELIVERIES_SHOWN = 50
RATE_WINDOW = dt.timedelta(hours=1)
ZERO = Decimal(0)


def _rows(sql: str, params: dict) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def window_start(now: dt.datetime, days: int = DAYS) -> dt.datetime:
    """UTC midnight ``days - 1`` days ago: the dashboard shows ``days`` whole UTC days, today included."""
    today = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - dt.timedelta(days=days - 1)


# --- budgets list ------------------------------------------------------------------------------------


@dataclass
class SubjectUsage:
    subject: str
    spent_tokens: int
    spent_usd: Decimal
    reserved_tokens: int
    reserved_usd: Decimal
    in_flight: int


@dataclass
class BudgetUsage:
    """A budget's current period: the counter totals and (for one-counter-per-subject budgets) the top
    subjects by utilization."""

    budget: Budget
    period_start: dt.datetime
    period_end: dt.datetime | None
    subjects: int = 0
    spent_tokens: int = 0
    spent_usd: Decimal = ZERO
    reserved_tokens: int = 0
    reserved_usd: Decimal = ZERO
    in_flight: int = 0
    top: list[SubjectUsage] = field(default_factory=list)

    @property
    def per_subject(self) -> bool:
        return self.budget.scope != Budget.Scope.GLOBAL and not self.budget.scope_key


# One statement for every budget: the current-period counters with their per-budget totals (window
# aggregates) and their rank by utilization; only the top rows come back. The (budget, period) pairs are
# passed as two arrays because each budget has its own period start (its own time zone).
_CURRENT_COUNTERS = """
WITH cur AS (
    SELECT c.budget_id, c.subject, c.spent_tokens, c.spent_usd, c.reserved_tokens, c.reserved_usd, c.in_flight,
           count(*) OVER w AS subjects,
           sum(c.spent_tokens) OVER w AS t_spent_tokens, sum(c.spent_usd) OVER w AS t_spent_usd,
           sum(c.reserved_tokens) OVER w AS t_reserved_tokens, sum(c.reserved_usd) OVER w AS t_reserved_usd,
           sum(c.in_flight) OVER w AS t_in_flight,
           row_number() OVER (
               PARTITION BY c.budget_id
               ORDER BY greatest(
                   coalesce((c.spent_tokens + c.reserved_tokens)::numeric / nullif(b.limit_tokens, 0), 0),
                   coalesce((c.spent_usd + c.reserved_usd) / nullif(b.limit_usd, 0), 0)
               ) DESC, c.spent_tokens DESC, c.subject
           ) AS rank
    FROM budgets_budgetcounter c
    JOIN unnest(%(budgets)s::bigint[], %(starts)s::timestamptz[]) AS k(b, p)
      ON c.budget_id = k.b AND c.period_start = k.p
    JOIN budgets_budget b ON b.id = c.budget_id
    WINDOW w AS (PARTITION BY c.budget_id)
)
SELECT budget_id, subject, spent_tokens, spent_usd, reserved_tokens, reserved_usd, in_flight,
       subjects, t_spent_tokens, t_spent_usd, t_reserved_tokens, t_reserved_usd, t_in_flight
FROM cur WHERE rank <= %(top)s ORDER BY budget_id, rank
"""


def budget_usage(budgets: list[Budget], now: dt.datetime | None = None, top: int = TOP_SUBJECTS) -> list[BudgetUsage]:
    """Current-period usage of each budget, in the order given: two statements whatever the number of
    budgets and counters."""
    now = now or timezone.now()
    usage = {b.pk: BudgetUsage(b, periods.period_start(b, now), periods.period_end(b, now)) for b in budgets}
    if not usage:
        return []
    rows = _rows(
        _CURRENT_COUNTERS,
        {"budgets": list(usage), "starts": [u.period_start for u in usage.values()], "top": top},
    )
    for budget_id, subject, s_tok, s_usd, r_tok, r_usd, flight, subjects, *totals in rows:
        item = usage[budget_id]
        if not item.subjects:
            item.subjects = subjects
            (item.spent_tokens, item.spent_usd, item.reserved_tokens, item.reserved_usd, item.in_flight) = (
                int(totals[0]),
                totals[1],
                int(totals[2]),
                totals[3],
                int(totals[4]),
            )
        if item.per_subject:
            item.top.append(SubjectUsage(subject, s_tok, s_usd, r_tok, r_usd, flight))
    return [usage[b.pk] for b in budgets]


def open_alert_count() -> int:
    return Alert.objects.filter(acknowledged_at=None).count()


# --- prices, webhook deliveries, alerts ---------------------------------------------------------------


def price_history() -> QuerySet[ModelPrice]:
    """Every price row by model, newest first, each annotated ``used``: whether a call was charged at it."""
    return ModelPrice.objects.annotate(used=Exists(UsageRecord.objects.filter(price=OuterRef("pk")))).order_by(
        "model", "-effective_from"
    )


def recent_deliveries(limit: int = DELIVERIES_SHOWN) -> QuerySet[WebhookDelivery]:
    """The newest webhook deliveries with their webhook and alert."""
    return WebhookDelivery.objects.select_related("webhook", "alert").order_by("-created_at", "-pk")[:limit]


def open_alerts() -> QuerySet[Alert]:
    """Alerts nobody acknowledged yet, newest first."""
    return Alert.objects.filter(acknowledged_at=None).order_by("-created_at", "-pk")


def acknowledged_alerts() -> QuerySet[Alert]:
    """Acknowledged alerts, newest first."""
    return Alert.objects.exclude(acknowledged_at=None).order_by("-created_at", "-pk")


def shown_alerts(alerts: QuerySet[Alert]) -> list[Alert]:
    """The first ALERTS_SHOWN of ``alerts`` with what their rows show (budget, who acknowledged)."""
    return list(alerts.select_related("budget", "acknowledged_by")[:ALERTS_SHOWN])


# --- cost dashboard -----------------------------------------------------------------------------------

# Per UTC day × agent × model × operation: whole UTC days before today from the daily rollup, today from
# the hourly rollup plus the un-rolled tail.
_TAIL_CTE = """
WITH tail AS (
    SELECT created_at, agent, model, operation, input_tokens, output_tokens, cached_tokens, cost_usd
    FROM budgets_usagerecord WHERE NOT rolled_up ORDER BY id LIMIT %(tail_limit)s
),
live AS (
    SELECT hour AS at, agent, model, operation, calls, input_tokens, output_tokens, cached_tokens, cost_usd
    FROM budgets_hourlyusage WHERE hour >= %(today)s
    UNION ALL
    SELECT created_at, agent, model, operation, 1, input_tokens, output_tokens, cached_tokens, cost_usd
    FROM tail WHERE created_at >= %(since)s
)
"""
_LIVE_ROWS = """
SELECT 'live', NULL, (at AT TIME ZONE 'UTC')::date, agent, model, operation,
       sum(calls), sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost_usd)
FROM live GROUP BY 3, 4, 5, 6
"""
_PAST_ROWS = """
SELECT 'past', NULL, day, agent, model, operation,
       sum(calls), sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost_usd)
FROM budgets_dailyusage WHERE day >= %(since_day)s AND day < %(today_day)s GROUP BY 3, 4, 5, 6
UNION ALL
"""
ALL_SPEND = _TAIL_CTE + _PAST_ROWS + _LIVE_ROWS

# Top sessions over the last TOP_SESSION_DAYS days, exact: every session's rollup total (one scan) joined
# with the sessions of the un-rolled tail. A session is one agent's (as for session budgets): two agents
# that pick the same session id are listed apart.
_TOP_SESSIONS = """
WITH tail AS (
    SELECT session_id, agent, input_tokens + output_tokens AS tokens, cost_usd
    FROM (
        SELECT session_id, agent, input_tokens, output_tokens, cost_usd, created_at
        FROM budgets_usagerecord WHERE NOT rolled_up ORDER BY id LIMIT %(tail_limit)s
    ) t
    WHERE session_id <> '' AND created_at >= %(since)s
),
tail_sessions AS (
    SELECT session_id, agent, count(*) AS calls, sum(tokens) AS tokens, sum(cost_usd) AS cost_usd
    FROM tail GROUP BY session_id, agent
),
rolled AS (
    SELECT session_id, agent, sum(calls) AS calls, sum(tokens) AS tokens, sum(cost_usd) AS cost_usd
    FROM budgets_sessionusage WHERE day >= %(since_day)s GROUP BY session_id, agent
)
SELECT session_id, agent,
       coalesce(r.calls, 0) + coalesce(t.calls, 0),
       coalesce(r.tokens, 0) + coalesce(t.tokens, 0),
       coalesce(r.cost_usd, 0) + coalesce(t.cost_usd, 0) AS cost
FROM rolled r FULL JOIN tail_sessions t USING (session_id, agent)
ORDER BY cost DESC, session_id, agent LIMIT %(top)s
"""

# Spend of the last hour by agent and session (the burn rate), straight from the ledger (created_at index).
_RECENT = """
SELECT agent, session_id, coalesce(sum(input_tokens + output_tokens) FILTER (WHERE NOT cached), 0), sum(cost_usd)
FROM budgets_usagerecord WHERE created_at >= %(since)s AND created_at <= %(now)s
GROUP BY agent, session_id
"""


def _usd(value) -> float:
    return round(float(value or 0), 8)


def spend_rows(now: dt.datetime, days: int = DAYS) -> list[tuple]:
    """(day, agent, model, operation, calls, input, output, cached tokens, usd) over the window: whole UTC
    days before today from the daily rollup, today from the hourly rollup plus the un-rolled tail, all in
    one statement (one snapshot), so nothing is counted twice or missed while a roll-up runs."""
    since = window_start(now, days)
    today = window_start(now, 1)
    params = {
        "since": since,
        "today": today,
        "since_day": since.date(),
        "today_day": today.date(),
        "tail_limit": TAIL_LIMIT,
    }
    return [row[2:] for row in _rows(ALL_SPEND, params) if row[2] is not None]


def spend_breakdown(now: dt.datetime, days: int = DAYS) -> dict:
    """Spend per day stacked by model, by agent, by operation, and tokens vs cached tokens per day."""
    since = window_start(now, days)
    labels = [(since + dt.timedelta(days=i)).date() for i in range(days)]
    index = {day: i for i, day in enumerate(labels)}
    by_model: dict[str, list[Decimal]] = defaultdict(lambda: [ZERO] * days)
    tokens, cached = [0] * days, [0] * days
    agents: dict[str, list] = defaultdict(lambda: [0, 0, ZERO])  # calls, tokens, usd
    operations: dict[str, list] = defaultdict(lambda: [0, 0, ZERO])
    total = [0, 0, 0, ZERO]  # calls, tokens, cached tokens, usd
    for day, agent, model, operation, calls, t_in, t_out, t_cached, usd in spend_rows(now, days):
        i = index.get(day)
        if i is None:  # a row from the future (clock skew): not on this chart
            continue
        calls, spent = int(calls), int(t_in) + int(t_out)
        by_model[model][i] += usd
        tokens[i] += spent
        cached[i] += int(t_cached)
        for bucket in (agents[agent], operations[operation]):
            bucket[0] += calls
            bucket[1] += spent
            bucket[2] += usd
        total[0] += calls
        total[1] += spent
        total[2] += int(t_cached)
        total[3] += usd

    def ranked(groups: dict[str, list], key: str) -> list[dict]:
        items = sorted(groups.items(), key=lambda kv: (-kv[1][2], kv[0]))
        return [{key: name, "calls": c, "tokens": t, "usd": _usd(u)} for name, (c, t, u) in items]

    models = sorted(by_model, key=lambda m: (-sum(by_model[m]), m))
    return {
        "since": since.isoformat(),
        "days": [day.isoformat() for day in labels],
        "spend_by_day": [{"model": m, "usd": [_usd(v) for v in by_model[m]]} for m in models],
        "tokens_by_day": {"tokens": tokens, "cached_tokens": cached},
        "by_agent": ranked(agents, "agent"),
        "by_operation": ranked(operations, "operation"),
        "totals": {"calls": total[0], "tokens": total[1], "cached_tokens": total[2], "usd": _usd(total[3])},
    }


def top_sessions(now: dt.datetime, days: int = TOP_SESSION_DAYS, top: int = TOP_SESSIONS) -> list[dict]:
    """The sessions that spent most over the last ``days`` UTC days (rollup plus tail)."""
    since = window_start(now, days)
    rows = _rows(_TOP_SESSIONS, {"since": since, "since_day": since.date(), "top": top, "tail_limit": TAIL_LIMIT})
    return [
        {"session_id": sid, "agent": agent, "calls": int(calls), "tokens": int(tokens), "usd": _usd(usd)}
        for sid, agent, calls, tokens, usd in rows
    ]


# --- burn-rate forecast -------------------------------------------------------------------------------


@dataclass
class Forecast:
    budget: str
    subject: str
    timezone: str
    limit: str
    used: str
    rate_per_hour: str
    runs_out_at: str | None  # ISO instant
    runs_out_local: str  # "15:40" in the budget's time zone
    message: str  # starts with `who`, the budget's name (and subject): the page marks that part as data
    state: str  # "ok" | "runs_out" | "exhausted"
    who: str = ""


def _rate_by_subject(rows, budget: Budget, teams: dict[str, str]) -> dict[str, tuple[int, Decimal]]:
    """Last-hour spend (tokens, usd) per counter subject of this budget."""
    out: dict[str, list] = defaultdict(lambda: [0, ZERO])
    for agent, session_id, tokens, usd in rows:
        caller = directory.Caller(agent=agent, team=teams.get(agent, ""), session_id=session_id)
        subject = directory.subject_for(budget, caller)
        if subject is None:
            continue
        out[subject][0] += int(tokens)
        out[subject][1] += usd or ZERO
    return {k: (v[0], v[1]) for k, v in out.items()}


def _forecast_one(budget: Budget, usage: BudgetUsage | None, subject: str, rate: tuple[int, Decimal], now) -> Forecast:
    """When the remaining room runs out at the last hour's pace: the earlier of the token and dollar limit."""
    zone = zoneinfo.ZoneInfo(budget.timezone)
    end = periods.period_end(budget, now)
    counter = next((s for s in usage.top if s.subject == subject), None) if usage and usage.per_subject else usage
    spent_tokens = counter.spent_tokens + counter.reserved_tokens if counter else 0
    spent_usd = (counter.spent_usd + counter.reserved_usd) if counter else ZERO
    hours = RATE_WINDOW.total_seconds() / 3600
    tokens_per_hour, usd_per_hour = rate[0] / hours, float(rate[1]) / hours
    limits, used, rates, left_hours = [], [], [], []
    if budget.limit_tokens:
        limits.append(display.tokens(budget.limit_tokens))
        used.append(display.tokens(spent_tokens))
        rates.append(_("%(amount)s/h") % {"amount": display.tokens(tokens_per_hour)})
        left = budget.limit_tokens - spent_tokens
        left_hours.append(0.0 if left <= 0 else (left / tokens_per_hour if tokens_per_hour > 0 else None))
    if budget.limit_usd:
        limits.append(display.usd(budget.limit_usd, 2))
        used.append(display.usd(spent_usd, 4))
        rates.append(_("%(amount)s/h") % {"amount": display.usd(usd_per_hour, 4)})
        left_usd = float(budget.limit_usd - spent_usd)
        left_hours.append(0.0 if left_usd <= 0 else (left_usd / usd_per_hour if usd_per_hour > 0 else None))
    known = [h for h in left_hours if h is not None]
    who = f"{budget.name}" + (f" ({directory.subject_label(budget, subject)})" if subject else "")
    base = dict(
        who=who,
        budget=budget.name,
        subject=subject,
        timezone=budget.timezone,
        limit=" / ".join(limits),
        used=" / ".join(used),
        rate_per_hour=" / ".join(rates),
    )
    if known and min(known) == 0:
        return Forecast(
            **base,
            runs_out_at=None,
            runs_out_local="",
            state="exhausted",
            message=_("%(who)s: the daily budget is used up") % {"who": who},
        )
    at = now + dt.timedelta(hours=min(known)) if known else None
    if at is None or (end is not None and at >= end):
        return Forecast(
            **base,
            runs_out_at=None,
            runs_out_local="",
            state="ok",
            message=_("%(who)s: does not run out today at the current rate") % {"who": who},
        )
    local = at.astimezone(zone).strftime("%H:%M")
    return Forecast(
        **base,
        runs_out_at=at.isoformat(),
        runs_out_local=local,
        state="runs_out",
        message=_("%(who)s: at the current rate the daily budget runs out at %(time)s (%(zone)s)")
        % {"who": who, "time": local, "zone": budget.timezone},
    )


def forecasts(now: dt.datetime) -> list[Forecast]:
    """Every enabled day-period budget with a token or dollar limit: when it runs out today at the rate of
    the last hour. A one-counter-per-subject budget is forecast for its subject closest to the limit."""
    budgets = list(
        Budget.objects.filter(enabled=True, period=Budget.Period.DAY)
        .filter(Q(limit_tokens__isnull=False) | Q(limit_usd__isnull=False))
        .order_by("name")
    )
    if not budgets:
        return []
    usage = {u.budget.pk: u for u in budget_usage(budgets, now, top=1)}
    recent = _rows(_RECENT, {"since": now - RATE_WINDOW, "now": now})
    teams: dict[str, str] = {}
    if any(b.scope == Budget.Scope.TEAM for b in budgets):
        teams = dict(Agent.objects.exclude(team="").values_list("name", "team"))
    out = []
    for budget in budgets:
        item = usage[budget.pk]
        rates = _rate_by_subject(recent, budget, teams)
        if item.per_subject:
            # the subject closest to its limit now, else the one spending fastest
            subject = item.top[0].subject if item.top else max(rates, key=lambda s: rates[s][1], default=None)
            if subject is None:
                continue
        else:
            subject = budget.scope_key if budget.scope != Budget.Scope.GLOBAL else ""
        out.append(_forecast_one(budget, item, subject, rates.get(subject, (0, ZERO)), now))
    return out


def cost_data(now: dt.datetime | None = None, days: int = DAYS) -> dict:
    """Everything the cost dashboard draws (JSON-ready)."""
    now = now or timezone.now()
    data = spend_breakdown(now, days)
    data["generated_at"] = now.isoformat()
    data["top_sessions"] = top_sessions(now)
    data["top_session_days"] = TOP_SESSION_DAYS
    data["forecasts"] = [f.__dict__ for f in forecasts(now)]
    data["recent_calls"] = recent_calls()
    return data


def recent_calls(limit: int = RECENT_CALLS) -> list[dict]:
    """The newest ledger rows with the price row each was priced with (the index on id serves it)."""
    return call_rows(UsageRecord.objects.select_related("price").order_by("-id")[:limit])
