"""Budget admin screens (`/budgets/…`) and the cost dashboard (`/costs/`), DESIGN §7, §8a, §9.

Views validate with budgets.forms and change state only through budgets.actions; the reads live in
budgets.queries and the display values in budgets.presenters (no lookups or arithmetic in templates).
Everything a user or an agent typed (names, subjects, webhook URLs, alert messages) is auto-escaped.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agentops.accounts import roles
from budgets import presenters, queries
from budgets.actions import alerts as alert_actions
from budgets.actions import budgets as budget_actions
from budgets.actions import prices as price_actions
from budgets.actions import webhooks as webhook_actions
from budgets.forms import AlertSettingsForm, BudgetForm, PriceForm, WebhookForm, timezone_names
from budgets.models import AlertSettings, Budget, ModelPrice, Webhook


def _page(request, template: str, context: dict, status: int = 200) -> HttpResponse:
    """Render a budget-section page with the header's unacknowledged-alert count."""
    context.setdefault("open_alerts", queries.open_alert_count())
    return render(request, template, context, status=status)


# --- the budgets list ---------------------------------------------------------------------------------


def _list_context() -> dict:
    now = timezone.now()
    budgets = list(Budget.objects.order_by("-enabled", "scope", "name"))
    base_url = reverse("budgets:list")
    rows = [presenters.budget_row(usage, base_url) for usage in queries.budget_usage(budgets, now)]
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
            messages.success(request, _('Budget "%(name)s" saved.') % {"name": saved.name})
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
            messages.success(request, _('Budget "%(name)s" deleted.') % {"name": budget.name})
        else:
            messages.error(request, _('Budget "%(name)s" was already deleted.') % {"name": budget.name})
        return redirect("budgets:list")
    return _page(request, "budgets/budget_delete.html", {"budget": budget, "scope": presenters.scope_text(budget)})


# --- prices -------------------------------------------------------------------------------------------


def _price_initial(request, table: list[presenters.ModelPrices]) -> dict:
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
    table = presenters.price_table(queries.price_history(), timezone.now(), reverse("budgets:prices"))
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
                form.add_error(None, _("A price for this model already starts at that moment: pick another time."))
            else:
                for name, errors in exc.message_dict.items():
                    form.add_error(name if name in form.fields else None, errors)
        else:
            when = row.effective_from.strftime("%Y-%m-%d %H:%M UTC")
            messages.success(
                request,
                _("New price for %(model)s from %(when)s. Earlier calls keep their price.")
                % {"model": row.model, "when": when},
            )
            return redirect("budgets:prices")
    return _prices_page(request, form, status=422)


@roles.section_required("budgets")
@require_POST
def price_delete(request, pk: int):
    row = ModelPrice.objects.filter(pk=pk).first()
    if row is None:
        messages.error(request, _("That price row no longer exists."))
    elif row.effective_from <= timezone.now():
        messages.error(
            request,
            _(
                "The %(model)s price from %(when)s is in force or past: prices are history and are not deleted. "
                "Set a new price instead."
            )
            % {"model": row.model, "when": f"{row.effective_from:%Y-%m-%d %H:%M}"},
        )
    elif price_actions.delete_price(row.pk):
        messages.success(
            request,
            _("Deleted the future %(model)s price from %(when)s.")
            % {"model": row.model, "when": f"{row.effective_from:%Y-%m-%d %H:%M}"},
        )
    else:
        messages.error(
            request,
            _("The %(model)s price was already charged for calls, so it stays in the history.") % {"model": row.model},
        )
    return redirect("budgets:prices")


# --- webhooks and alert settings ------------------------------------------------------------------------


def _webhooks_page(
    request, *, form: WebhookForm | None = None, settings_form: AlertSettingsForm | None = None, status: int = 200
) -> HttpResponse:
    context = {
        "webhooks": list(Webhook.objects.order_by("name", "pk")),
        "form": form or WebhookForm(),
        "settings_form": settings_form or AlertSettingsForm(instance=AlertSettings.current()),
        "deliveries": presenters.delivery_rows(queries.recent_deliveries()),
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
        messages.success(request, _('Webhook "%(name)s" added: every alert is sent to it.') % {"name": hook.name})
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
            messages.success(request, _('Webhook "%(name)s" saved.') % {"name": hook.name})
            return redirect("budgets:webhooks")
        return _page(request, "budgets/webhook_form.html", {"form": form, "webhook": hook}, status=422)
    return _page(request, "budgets/webhook_form.html", {"form": form, "webhook": hook})


@roles.section_required("budgets")
@require_POST
def webhook_delete(request, pk: int):
    hook = get_object_or_404(Webhook, pk=pk)
    webhook_actions.delete_webhook(hook.pk)
    messages.success(request, _('Webhook "%(name)s" deleted (with its delivery log).') % {"name": hook.name})
    return redirect("budgets:webhooks")


@roles.section_required("budgets")
@require_POST
def webhook_test(request, pk: int):
    hook = get_object_or_404(Webhook, pk=pk)
    webhook_actions.send_test_alert(hook, request.user)
    messages.success(
        request, _('Test alert queued for "%(name)s": its delivery appears in the log below.') % {"name": hook.name}
    )
    return redirect(f"{reverse('budgets:webhooks')}#deliveries")


@roles.section_required("budgets")
@require_POST
def alert_settings(request):
    form = AlertSettingsForm(request.POST, instance=AlertSettings.current())
    if form.is_valid():
        webhook_actions.save_alert_settings(form.save(commit=False))
        messages.success(request, _("Alert thresholds saved."))
        return redirect("budgets:webhooks")
    return _webhooks_page(request, settings_form=form, status=422)


# --- alerts -------------------------------------------------------------------------------------------


def _alerts_context() -> dict:
    base = reverse("budgets:alerts")
    open_qs = queries.open_alerts()
    open_rows = presenters.alert_rows(queries.shown_alerts(open_qs), base)
    return {
        "open_rows": open_rows,
        "open_alerts": open_qs.count() if len(open_rows) >= queries.ALERTS_SHOWN else len(open_rows),
        "done_rows": presenters.alert_rows(queries.shown_alerts(queries.acknowledged_alerts()), base),
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
        messages.info(request, _("That alert was already acknowledged."))
    return _after_ack(request)


@roles.section_required("budgets")
@require_POST
def alerts_acknowledge_all(request):
    count = alert_actions.acknowledge_all(request.user)
    if not request.htmx:
        messages.success(
            request, ngettext("Acknowledged %(n)s alert.", "Acknowledged %(n)s alerts.", count) % {"n": count}
        )
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
