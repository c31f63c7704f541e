"""What the budget screens show: the utilization bars and rows of the budgets list, the price table, the
webhook delivery log and the alert rows, and how a ledger row's price is shown (costs and run screens).
Display values only: the numbers come from budgets.queries, the formatters from agentops/lib/display.py."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from agentops.lib import display
from budgets.actions.directory import subject_label
from budgets.forms import format_operation_limits
from budgets.models import ANY_MODEL, Alert, Budget, ModelPrice, UsageRecord, WebhookDelivery

SCOPE_LABELS = {
    Budget.Scope.TEAM: gettext_lazy("team"),
    Budget.Scope.AGENT: gettext_lazy("agent"),
    Budget.Scope.SESSION: gettext_lazy("session"),
}
EACH_SCOPE = {
    Budget.Scope.TEAM: gettext_lazy("each team separately"),
    Budget.Scope.AGENT: gettext_lazy("each agent separately"),
    Budget.Scope.SESSION: gettext_lazy("each session separately"),
}


def local_time(when: dt.datetime | None, zone: str) -> str:
    """An instant as the wall clock of ``zone`` shows it ("2025-06-30 23:59"); "" for none."""
    if when is None:
        return ""
    return when.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def count(value) -> str:
    """A bare count with thousands separators ("12,345"): a bar's token figures, where the label says
    "tokens"."""
    return f"{int(value):,}"


def dollars(value) -> str:
    """Dollars to 4 places below $100 (small spends are fractions of a cent), to the cent above."""
    return display.usd(Decimal(value or 0))


# --- the budgets list ---------------------------------------------------------------------------------


@dataclass
class Bar:
    """One utilization bar: spent and reserved shown as two segments of the limit."""

    label: str
    spent: str
    reserved: str
    limit: str
    used_pct: int  # spent + reserved, may exceed 100
    spent_w: int  # segment widths 0..100 (CSS classes w0…w100), spent_w + reserved_w <= 100
    reserved_w: int
    level: str  # ok | warn | bad
    summary: str
    has_reserved: bool


def bar(label: str, spent, reserved, limit, soft_pct: int, fmt) -> Bar:
    """The bar of one limit: segment widths, and the level (bad when spent alone reaches the limit, warn
    when spent + reserved reaches the soft threshold)."""
    limit_f = float(limit)
    spent_share = float(spent) / limit_f if limit_f else 0.0
    reserved_share = float(reserved) / limit_f if limit_f else 0.0
    used = spent_share + reserved_share
    spent_w = max(0, min(100, round(spent_share * 100)))
    reserved_w = max(0, min(100 - spent_w, round(reserved_share * 100)))
    if spent_share >= 1:
        level = "bad"
    elif used * 100 >= soft_pct:
        level = "warn"
    else:
        level = "ok"
    used_pct = round(used * 100)
    return Bar(
        label=label,
        spent=fmt(spent),
        reserved=fmt(reserved),
        limit=fmt(limit),
        used_pct=used_pct,
        spent_w=spent_w,
        reserved_w=reserved_w,
        level=level,
        summary=_("%(label)s: %(spent)s spent + %(reserved)s reserved of %(limit)s (%(pct)s%%)")
        % {"label": label, "spent": fmt(spent), "reserved": fmt(reserved), "limit": fmt(limit), "pct": used_pct},
        has_reserved=bool(reserved),
    )


def bars(budget: Budget, usage) -> list[Bar]:
    """A bar for each limit the budget has (tokens, USD) over ``usage`` (a budget's or one subject's)."""
    shown = []
    if budget.limit_tokens:
        shown.append(
            bar(
                _("tokens"),
                usage.spent_tokens,
                usage.reserved_tokens,
                budget.limit_tokens,
                budget.soft_threshold_pct,
                count,
            )
        )
    if budget.limit_usd:
        shown.append(
            bar("USD", usage.spent_usd, usage.reserved_usd, budget.limit_usd, budget.soft_threshold_pct, dollars)
        )
    return shown


@dataclass
class SubjectRow:
    subject: str
    bars: list[Bar]
    in_flight: int


@dataclass
class BudgetRow:
    pk: int
    name: str
    scope: str
    period: str
    timezone: str
    period_text: str
    hard_stop: bool
    enabled: bool
    on_block: str
    operation_limits: str
    per_subject: bool
    subjects: int
    bars: list[Bar]
    in_flight: int
    reserved: str
    top: list[SubjectRow] = field(default_factory=list)
    edit_url: str = ""
    delete_url: str = ""


def scope_text(budget: Budget) -> str:
    """Whom the budget counts: "global", "agent research", "each session separately"."""
    if budget.scope == Budget.Scope.GLOBAL:
        return _("global")
    if not budget.scope_key:
        return str(EACH_SCOPE[budget.scope])
    return _("%(scope)s %(key)s") % {"scope": SCOPE_LABELS[budget.scope], "key": budget.scope_key}


def period_text(budget: Budget, usage) -> str:
    """The current period in the budget's time zone ("2025-06-30 00:00 → 2025-07-01 00:00")."""
    if budget.period == Budget.Period.LIFETIME:
        return _("lifetime (never resets)")
    start = local_time(usage.period_start, budget.timezone)
    end = local_time(usage.period_end, budget.timezone)
    return f"{start} → {end}"


def reserved_text(budget: Budget, tokens: int, usd) -> str:
    """What is held by calls in flight ("1,200 tokens · $0.0030"), "—" when nothing and no limit."""
    parts = []
    if budget.limit_tokens or tokens:
        parts.append(display.tokens(tokens))
    if budget.limit_usd or usd:
        parts.append(dollars(usd))
    return " · ".join(parts) or "—"


def budget_row(usage, base_url: str) -> BudgetRow:
    """One row of the budgets list from a budget's current-period usage (budgets.queries.BudgetUsage)."""
    budget = usage.budget
    row = BudgetRow(
        pk=budget.pk,
        name=budget.name,
        scope=scope_text(budget),
        period=budget.get_period_display(),
        timezone=budget.timezone,
        period_text=period_text(budget, usage),
        hard_stop=budget.hard_stop,
        enabled=budget.enabled,
        on_block=budget.get_on_block_display(),
        operation_limits=format_operation_limits(budget.operation_limits) or "—",
        per_subject=usage.per_subject,
        subjects=usage.subjects,
        bars=[] if usage.per_subject else bars(budget, usage),
        in_flight=usage.in_flight,
        reserved=reserved_text(budget, usage.reserved_tokens, usage.reserved_usd),
        edit_url=f"{base_url}{budget.pk}/edit/",
        delete_url=f"{base_url}{budget.pk}/delete/",
    )
    row.top = [SubjectRow(subject_label(budget, s.subject), bars(budget, s), s.in_flight) for s in usage.top]
    return row


# --- prices -------------------------------------------------------------------------------------------


@dataclass
class PriceRow:
    pk: int
    model: str
    input_per_1k: Decimal
    output_per_1k: Decimal
    cached_input_per_1k: Decimal | None
    effective_from: str
    state: str  # current | future | past
    used: bool
    note: str
    created_by: str

    @property
    def deletable(self) -> bool:
        return self.state == "future" and not self.used


@dataclass
class ModelPrices:
    model: str
    current: PriceRow | None
    history: list[PriceRow]
    change_url: str


def price_table(prices: Iterable[ModelPrice], now: dt.datetime, base_url: str) -> list[ModelPrices]:
    """Every model's price rows (``prices`` by model, newest first, annotated ``used``), with the one in
    force now marked; ``base_url`` is the prices page."""
    by_model: dict[str, list[PriceRow]] = {}
    current: dict[str, PriceRow] = {}
    for price in prices:
        if price.effective_from > now:
            state = "future"
        elif price.model not in current:
            state = "current"
        else:
            state = "past"
        row = PriceRow(
            pk=price.pk,
            model=price.model,
            input_per_1k=price.input_per_1k,
            output_per_1k=price.output_per_1k,
            cached_input_per_1k=price.cached_input_per_1k,
            effective_from=price.effective_from.strftime("%Y-%m-%d %H:%M UTC"),
            state=state,
            used=price.used,
            note=price.note,
            created_by=price.created_by,
        )
        if state == "current":
            current[price.model] = row
        by_model.setdefault(price.model, []).append(row)
    return [
        ModelPrices(model, current.get(model), history, f"{base_url}?{urlencode({'model': model})}#price-form")
        for model, history in by_model.items()
    ]


# --- webhook deliveries -------------------------------------------------------------------------------


@dataclass
class DeliveryRow:
    delivery: WebhookDelivery
    webhook: str
    alert: str
    last_error: str
    attempts: list[dict]
    created: str


def short_error(error: str) -> str:
    """A logged error as the page shows it: the status line or the error class. Rows written before the log
    stopped keeping answers ("HTTP 500: <body>") show no more than new ones: the body is the far end's."""
    if error.startswith("RefusedURL"):
        return error  # our own words about the address
    return error.split(":", 1)[0]


def delivery_rows(deliveries: Iterable[WebhookDelivery]) -> list[DeliveryRow]:
    """The delivery log, each attempt with its time, status code and short error."""
    return [
        DeliveryRow(
            delivery=d,
            webhook=d.webhook.name,
            alert=str(d.alert),
            last_error=short_error(d.last_error),
            attempts=[
                {
                    "at": str(entry.get("at", ""))[:19].replace("T", " "),
                    "status_code": entry.get("status_code") if entry.get("status_code") is not None else "—",
                    "error": short_error(entry.get("error") or ""),
                }
                for entry in (d.log if isinstance(d.log, list) else [])
                if isinstance(entry, dict)
            ],
            created=d.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        for d in deliveries
    ]


# --- alerts -------------------------------------------------------------------------------------------


@dataclass
class AlertRow:
    alert: Alert
    budget: str
    created: str
    created_iso: str
    acknowledged: str
    ack_url: str


def acknowledged_text(alert: Alert) -> str:
    """When and by whom an alert was acknowledged ("2025-06-30 12:00 by alice"), "" while open."""
    if not alert.acknowledged_at:
        return ""
    who = alert.acknowledged_by.get_username() if alert.acknowledged_by_id else _("system")
    return _("%(when)s by %(who)s") % {"when": f"{alert.acknowledged_at:%Y-%m-%d %H:%M}", "who": who}


def alert_rows(alerts: Iterable[Alert], base_url: str) -> list[AlertRow]:
    """The alerts page's rows; ``base_url`` is the alerts page (each row's acknowledge URL is under it)."""
    return [
        AlertRow(
            alert=a,
            budget=a.budget.name if a.budget_id else "",
            created=a.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            created_iso=a.created_at.isoformat(),
            acknowledged=acknowledged_text(a),
            ack_url=f"{base_url}{a.pk}/acknowledge",
        )
        for a in alerts
    ]


# --- ledger rows --------------------------------------------------------------------------------------


def price_label(record: UsageRecord) -> str:
    """The row the call was priced with ("gpt-4 from 2023-03-14 · $0.03 / $0.06 per 1K"), or why none."""
    if record.cached:
        return _("cache hit (free)")
    price = record.price
    if price is None:
        return _("no price row (free)")
    name = _("catch-all *") if price.model == ANY_MODEL else price.model
    rates = _("%(input)s / %(output)s per 1K") % {
        "input": display.usd_rate(price.input_per_1k),
        "output": display.usd_rate(price.output_per_1k),
    }
    if price.cached_input_per_1k is not None:
        rates += " " + _("(cached %(price)s)") % {"price": display.usd_rate(price.cached_input_per_1k)}
    return _("%(name)s from %(day)s · %(rates)s") % {
        "name": name,
        "day": f"{price.effective_from:%Y-%m-%d}",
        "rates": rates,
    }


def call_row(record: UsageRecord) -> dict[str, Any]:
    """One ledger row for a table (JSON-ready): the model that answered and the price row that applied."""
    return {
        "id": record.pk,
        "at": record.created_at.isoformat(),
        "agent": record.agent,
        "run_id": record.run_id,
        "step": record.step,
        "operation": record.operation,
        "model": record.model,
        "price_id": record.price_id,
        "priced_as": price_label(record),
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cached_tokens": record.cached_tokens,
        "usd": float(record.cost_usd),
        "source": record.source,
    }


def call_rows(records: Iterable[UsageRecord]) -> list[dict[str, Any]]:
    return [call_row(record) for record in records]
