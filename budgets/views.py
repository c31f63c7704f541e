"""Budget admin screens (`/budgets/…`) and the cost dashboard (`/costs/`), DESIGN §7, §8a, §9.

Views validate with budgets.forms and change state only through budgets.actions; the reads live in
budgets.queries. Templates print display values prepared here (no lookups or arithmetic in templates).
Everything a user or an agent typed (names, subjects, webhook URLs, alert messages) is auto-escaped.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.db.models import Exists, OuterRef
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agentops.accounts import roles
from budgets import queries
from budgets.actions import alerts as alert_actions
from budgets.actions import budgets as budget_actions
from budgets.actions import directory
from budgets.actions import prices as price_actions
from budgets.actions import webhooks as webhook_actions
from budgets.forms import AlertSettingsForm, BudgetForm, PriceForm, WebhookForm, format_operation_limits, timezone_names
from budgets.models import Alert, AlertSettings, Budget, ModelPrice, UsageRecord, Webhook, WebhookDelivery

ALERTS_SHOWN = 100
DELIVERIES_SHOWN = 50
SCOPE_LABELS = {
    Budget.Scope.TEAM: "team",
    Budget.Scope.AGENT: "agent",
    Budget.Scope.SESSION: "session",
}


def _page(request, template: str, context: dict, status: int = 200) -> HttpResponse:
    """Render a budget-section page with the header's unacknowledged-alert count."""
    context.setdefault("open_alerts", queries.open_alert_count())
    return render(request, template, context, status=status)


def _local(when: dt.datetime | None, zone: str) -> str:
    if when is None:
        return ""
    return when.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


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


def _bar(label: str, spent, reserved, limit, soft_pct: int, fmt) -> Bar:
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
        summary=f"{label}: {fmt(spent)} spent + {fmt(reserved)} reserved of {fmt(limit)} ({used_pct}%)",
        has_reserved=bool(reserved),
    )


def _tokens(value) -> str:
    return f"{int(value):,}"


def _dollars(value) -> str:
    value = Decimal(value or 0)
    return f"${value:,.4f}" if abs(value) < 100 else f"${value:,.2f}"


def _bars(budget: Budget, usage) -> list[Bar]:
    bars = []
    if budget.limit_tokens:
        bars.append(
            _bar(
                "tokens",
                usage.spent_tokens,
                usage.reserved_tokens,
                budget.limit_tokens,
                budget.soft_threshold_pct,
                _tokens,
            )
        )
    if budget.limit_usd:
        bars.append(
            _bar("USD", usage.spent_usd, usage.reserved_usd, budget.limit_usd, budget.soft_threshold_pct, _dollars)
        )
    return bars


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


def _scope_text(budget: Budget) -> str:
    if budget.scope == Budget.Scope.GLOBAL:
        return "global"
    noun = SCOPE_LABELS[budget.scope]
    return f"{noun} {budget.scope_key}" if budget.scope_key else f"each {noun} separately"


def _period_text(budget: Budget, usage) -> str:
    if budget.period == Budget.Period.LIFETIME:
        return "lifetime (never resets)"
    start = _local(usage.period_start, budget.timezone)
    end = _local(usage.period_end, budget.timezone)
    return f"{start} → {end}"


def _reserved_text(budget: Budget, tokens: int, usd) -> str:
    parts = []
    if budget.limit_tokens or tokens:
        parts.append(f"{_tokens(tokens)} tokens")
    if budget.limit_usd or usd:
        parts.append(_dollars(usd))
    return " · ".join(parts) or "—"


def _budget_row(usage, base_url: str) -> BudgetRow:
    budget = usage.budget
    row = BudgetRow(
        pk=budget.pk,
        name=budget.name,
        scope=_scope_text(budget),
        period=budget.get_period_display(),
        timezone=budget.timezone,
        period_text=_period_text(budget, usage),
        hard_stop=budget.hard_stop,
        enabled=budget.enabled,
        on_block=budget.get_on_block_display(),
        operation_limits=format_operation_limits(budget.operation_limits) or "—",
        per_subject=usage.per_subject,
        subjects=usage.subjects,
        bars=[] if usage.per_subject else _bars(budget, usage),
        in_flight=usage.in_flight,
        reserved=_reserved_text(budget, usage.reserved_tokens, usage.reserved_usd),
        edit_url=f"{base_url}{budget.pk}/edit/",
        delete_url=f"{base_url}{budget.pk}/delete/",
    )
    row.top = [SubjectRow(directory.subject_label(budget, s.subject), _bars(budget, s), s.in_flight) for s in usage.top]
    return row


def _list_context() -> dict:
    now = timezone.now()
    budgets = list(Budget.objects.order_by("-enabled", "scope", "name"))
    base_url = reverse("budgets:list")
    rows = [_budget_row(usage, base_url) for usage in queries.budget_usage(budgets, now)]
    return {"rows": rows, "server_now": now.isoformat(), "top_subjects": queries.TOP_SUBJECTS}


@roles.section_required("budgets")
@require_GET
def budget_list(request):
    """`/budgets/`: every budget's current period. htmx (live refresh) gets the rows fragment only."""
    context = _list_context()
    if request.htmx and not request.htmx.boosted:
        return render(request, "budgets/list.html#live", context)
    return _page(request, "budgets/list.html", context)


# --- create / edit / delete a budget --------------------------------------------------------------------


def _budget_form_page(request, form: BudgetForm, budget: Budget | None, status: int = 200) -> HttpResponse:
    return _page(
        request,
        "budgets/budget_form.html",
        {"form": form, "budget": budget, "timezones": timezone_names()},
        status=status,
    )


def _save_budget_form(request, form: BudgetForm, budget: Budget | None) -> HttpResponse:
    if form.is_valid():
        try:
            saved = budget_actions.save_budget(form.save(commit=False))
        except ValidationError as exc:  # changed meanwhile (e.g. the same name saved by someone else)
            form.add_error(None, exc)
        except IntegrityError:
            form.add_error("name", "A budget with this name already exists: pick another name.")
        else:
            messages.success(request, f'Budget "{saved.name}" saved.')
            return redirect("budgets:list")
    return _budget_form_page(request, form, budget, status=422)


@roles.section_required("budgets")
@require_http_methods(["GET", "POST"])
def budget_create(request):
    if request.method == "POST":
        return _save_budget_form(request, BudgetForm(request.POST), None)
    return _budget_form_page(request, BudgetForm(initial={"timezone": settings.BUDGET_TIMEZONE}), None)


@roles.section_required("budgets")
@require_http_methods(["GET", "POST"])
def budget_edit(request, pk: int):
    budget = get_object_or_404(Budget, pk=pk)
    if request.method == "POST":
        return _save_budget_form(request, BudgetForm(request.POST, instance=budget), budget)
    return _budget_form_page(request, BudgetForm(instance=budget), budget)


@roles.section_required("budgets")
@require_http_methods(["GET", "POST"])
def budget_delete(request, pk: int):
    budget = get_object_or_404(Budget, pk=pk)
    if request.method == "POST":
        if budget_actions.delete_budget(budget.pk):
            messages.success(request, f'Budget "{budget.name}" deleted.')
        else:
            messages.error(request, f'Budget "{budget.name}" was already deleted.')
        return redirect("budgets:list")
    return _page(request, "budgets/budget_delete.html", {"budget": budget, "scope": _scope_text(budget)})


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


def _price_table(now: dt.datetime) -> list[ModelPrices]:
    """Every model's price rows, newest first, with the one in force now marked: one query."""
    rows = ModelPrice.objects.annotate(used=Exists(UsageRecord.objects.filter(price=OuterRef("pk")))).order_by(
        "model", "-effective_from"
    )
    by_model: dict[str, list[PriceRow]] = {}
    current: dict[str, PriceRow] = {}
    for price in rows:
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
    base = reverse("budgets:prices")
    return [
        ModelPrices(model, current.get(model), history, f"{base}?{_query({'model': model})}#price-form")
        for model, history in by_model.items()
    ]


def _query(params: dict) -> str:
    from urllib.parse import urlencode

    return urlencode(params)


def _price_initial(request, table: list[ModelPrices]) -> dict:
    model = request.GET.get("model", "").strip()
    match = next((m for m in table if m.model == model and m.current), None)
    if match is None:
        return {"model": model} if model else {}
    cur = match.current
    return {
        "model": model,
        "input_per_1k": cur.input_per_1k,
        "output_per_1k": cur.output_per_1k,
        "cached_input_per_1k": cur.cached_input_per_1k,
    }


def _prices_page(request, form: PriceForm | None = None, status: int = 200) -> HttpResponse:
    table = _price_table(timezone.now())
    if form is None:
        form = PriceForm(initial=_price_initial(request, table))
    return _page(request, "budgets/prices.html", {"table": table, "form": form}, status=status)


@roles.section_required("budgets")
@require_http_methods(["GET", "POST"])
def prices(request):
    """`/budgets/prices/`: current price and full history per model; POST adds a price row."""
    if request.method == "GET":
        return _prices_page(request)
    form = PriceForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            row = price_actions.set_price(
                data["model"],
                data["input_per_1k"],
                data["output_per_1k"],
                cached_input_per_1k=data["cached_input_per_1k"],
                effective_from=data["effective_from"],
                note=data["note"],
                user=request.user.get_username(),
            )
        except ValidationError as exc:
            if "__all__" in getattr(exc, "error_dict", {}) or not hasattr(exc, "error_dict"):
                form.add_error(None, "A price for this model already starts at that moment: pick another time.")
            else:
                for name, errors in exc.message_dict.items():
                    form.add_error(name if name in form.fields else None, errors)
        else:
            when = row.effective_from.strftime("%Y-%m-%d %H:%M UTC")
            messages.success(request, f"New price for {row.model} from {when}. Earlier calls keep their price.")
            return redirect("budgets:prices")
    return _prices_page(request, form, status=422)


@roles.section_required("budgets")
@require_POST
def price_delete(request, pk: int):
    row = ModelPrice.objects.filter(pk=pk).first()
    if row is None:
        messages.error(request, "That price row no longer exists.")
    elif row.effective_from <= timezone.now():
        messages.error(
            request,
            f"The {row.model} price from {row.effective_from:%Y-%m-%d %H:%M} is in force or past: "
            "prices are history and are not deleted. Set a new price instead.",
        )
    elif price_actions.delete_price(row.pk):
        messages.success(request, f"Deleted the future {row.model} price from {row.effective_from:%Y-%m-%d %H:%M}.")
    else:
        messages.error(request, f"The {row.model} price was already charged for calls, so it stays in the history.")
    return redirect("budgets:prices")


# --- webhooks and alert settings ------------------------------------------------------------------------


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


def _deliveries() -> list[DeliveryRow]:
    rows = WebhookDelivery.objects.select_related("webhook", "alert").order_by("-created_at", "-pk")[:DELIVERIES_SHOWN]
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
        for d in rows
    ]


def _webhooks_page(
    request, *, form: WebhookForm | None = None, settings_form: AlertSettingsForm | None = None, status: int = 200
) -> HttpResponse:
    context = {
        "webhooks": list(Webhook.objects.order_by("name", "pk")),
        "form": form or WebhookForm(),
        "settings_form": settings_form or AlertSettingsForm(instance=AlertSettings.current()),
        "deliveries": _deliveries(),
    }
    return _page(request, "budgets/webhooks.html", context, status=status)


@roles.section_required("budgets")
@require_http_methods(["GET", "POST"])
def webhooks(request):
    """`/budgets/webhooks/`: webhooks, the alert thresholds and the delivery log; POST adds a webhook."""
    if request.method == "GET":
        return _webhooks_page(request)
    form = WebhookForm(request.POST)
    if form.is_valid():
        hook = webhook_actions.save_webhook(form.save(commit=False))
        messages.success(request, f'Webhook "{hook.name}" added: every alert is sent to it.')
        return redirect("budgets:webhooks")
    return _webhooks_page(request, form=form, status=422)


@roles.section_required("budgets")
@require_http_methods(["GET", "POST"])
def webhook_edit(request, pk: int):
    hook = get_object_or_404(Webhook, pk=pk)
    form = WebhookForm(request.POST if request.method == "POST" else None, instance=hook)
    if request.method == "POST":
        if form.is_valid():
            webhook_actions.save_webhook(form.save(commit=False))
            messages.success(request, f'Webhook "{hook.name}" saved.')
            return redirect("budgets:webhooks")
        return _page(request, "budgets/webhook_form.html", {"form": form, "webhook": hook}, status=422)
    return _page(request, "budgets/webhook_form.html", {"form": form, "webhook": hook})


@roles.section_required("budgets")
@require_POST
def webhook_delete(request, pk: int):
    hook = get_object_or_404(Webhook, pk=pk)
    webhook_actions.delete_webhook(hook.pk)
    messages.success(request, f'Webhook "{hook.name}" deleted (with its delivery log).')
    return redirect("budgets:webhooks")


@roles.section_required("budgets")
@require_POST
def webhook_test(request, pk: int):
    hook = get_object_or_404(Webhook, pk=pk)
    webhook_actions.send_test_alert(hook, request.user)
    messages.success(request, f'Test alert queued for "{hook.name}": its delivery appears in the log below.')
    return redirect(f"{reverse('budgets:webhooks')}#deliveries")


@roles.section_required("budgets")
@require_POST
def alert_settings(request):
    form = AlertSettingsForm(request.POST, instance=AlertSettings.current())
    if form.is_valid():
        webhook_actions.save_alert_settings(form.save(commit=False))
        messages.success(request, "Alert thresholds saved.")
        return redirect("budgets:webhooks")
    return _webhooks_page(request, settings_form=form, status=422)


# --- alerts -------------------------------------------------------------------------------------------


@dataclass
class AlertRow:
    alert: Alert
    budget: str
    created: str
    created_iso: str
    acknowledged: str
    ack_url: str


def _acknowledged(alert: Alert) -> str:
    if not alert.acknowledged_at:
        return ""
    who = alert.acknowledged_by.get_username() if alert.acknowledged_by_id else "system"
    return f"{alert.acknowledged_at:%Y-%m-%d %H:%M} by {who}"


def _alert_rows(queryset, base: str) -> list[AlertRow]:
    return [
        AlertRow(
            alert=a,
            budget=a.budget.name if a.budget_id else "",
            created=a.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            created_iso=a.created_at.isoformat(),
            acknowledged=_acknowledged(a),
            ack_url=f"{base}{a.pk}/acknowledge",
        )
        for a in queryset.select_related("budget", "acknowledged_by")[:ALERTS_SHOWN]
    ]


def _alerts_context() -> dict:
    base = reverse("budgets:alerts")
    open_qs = Alert.objects.filter(acknowledged_at=None).order_by("-created_at", "-pk")
    open_rows = _alert_rows(open_qs, base)
    return {
        "open_rows": open_rows,
        "open_alerts": open_qs.count() if len(open_rows) >= ALERTS_SHOWN else len(open_rows),
        "done_rows": _alert_rows(Alert.objects.exclude(acknowledged_at=None).order_by("-created_at", "-pk"), base),
    }


@roles.section_required("budgets")
@require_GET
def alerts(request):
    """`/budgets/alerts/`: open alerts first, then the acknowledged ones. Live via the `alerts` group."""
    context = _alerts_context()
    if request.htmx and not request.htmx.boosted:
        return render(request, "budgets/alerts.html#live", context)
    return _page(request, "budgets/alerts.html", context)


def _after_ack(request) -> HttpResponse:
    if request.htmx:
        return render(request, "budgets/alerts.html#live", _alerts_context())
    return redirect("budgets:alerts")


@roles.section_required("budgets")
@require_POST
def alert_acknowledge(request, pk: int):
    if not alert_actions.acknowledge_alert(pk, request.user) and not request.htmx:
        messages.info(request, "That alert was already acknowledged.")
    return _after_ack(request)


@roles.section_required("budgets")
@require_POST
def alerts_acknowledge_all(request):
    count = alert_actions.acknowledge_all(request.user)
    if not request.htmx:
        messages.success(request, f"Acknowledged {count} alert{'s' if count != 1 else ''}.")
    return _after_ack(request)


@roles.section_required("budgets")
@require_GET
def alert_badge(request):
    """The header's unacknowledged-alert count (re-read live)."""
    return render(request, "budgets/_subnav.html#badge", {"open_alerts": queries.open_alert_count()})


# --- cost dashboard -----------------------------------------------------------------------------------


@roles.section_required("costs")
@require_GET
def costs(request):
    """`/costs/`: the charts are drawn by static/js/costs.js from `/costs/data.json`."""
    config = {
        "data_url": reverse("budgets:costs_data"),
        "live_group": "budgets",
        "days": queries.DAYS,
        "session_days": queries.TOP_SESSION_DAYS,
    }
    return _page(request, "budgets/costs.html", {"config": config})


@roles.section_required("costs")
@require_GET
def costs_data(request):
    """`/costs/data.json`: spend per day by model, by agent and operation, top sessions, tokens vs cached
    tokens per day and the burn-rate forecasts (rollups plus the un-rolled ledger tail)."""
    response = JsonResponse(queries.cost_data())
    response["Cache-Control"] = "no-store"
    return response
