"""Admin for budgets: prices, budgets, webhooks and alert settings save through budgets.actions (validated,
announced live); the ledger, counters, reservations, rollups, alerts and deliveries are read-only (only
budgets.actions writes them)."""

from django.contrib import admin, messages
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from budgets.actions import alerts, prices, webhooks
from budgets.actions import budgets as budget_actions
from budgets.models import (
    Alert,
    AlertSettings,
    Budget,
    BudgetCounter,
    HourlyUsage,
    ModelPrice,
    Reservation,
    SessionUsage,
    UsageRecord,
    Webhook,
    WebhookDelivery,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """A price row is never edited: "changing" a price adds a row (budgets.actions.prices.set_price)."""

    list_display = ("model", "input_per_1k", "output_per_1k", "cached_input_per_1k", "effective_from", "created_by")
    list_filter = ("model",)
    fields = ("model", "input_per_1k", "output_per_1k", "cached_input_per_1k", "effective_from", "note")

    def has_change_permission(self, request, obj=None):
        return obj is None  # the list page, never an existing row

    def save_model(self, request, obj, form, change):
        saved = prices.set_price(
            obj.model,
            obj.input_per_1k,
            obj.output_per_1k,
            cached_input_per_1k=obj.cached_input_per_1k,
            effective_from=obj.effective_from,
            note=obj.note,
            user=request.user.get_username(),
        )
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        if not prices.delete_price(obj.pk):
            messages.error(
                request, _("%(price)s was charged for calls: it stays in the price history.") % {"price": obj}
            )

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ("name", "scope", "scope_key", "period", "limit_tokens", "limit_usd", "hard_stop", "enabled")
    list_filter = ("scope", "period", "enabled", "hard_stop")
    search_fields = ("name", "scope_key")

    def save_model(self, request, obj, form, change):
        budget_actions.save_budget(obj)

    def delete_model(self, request, obj):
        budget_actions.delete_budget(obj.pk)

    def delete_queryset(self, request, queryset):
        for pk in list(queryset.values_list("pk", flat=True)):
            budget_actions.delete_budget(pk)


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ("name", "url", "min_severity", "enabled")

    def save_model(self, request, obj, form, change):
        webhooks.save_webhook(obj)

    def delete_model(self, request, obj):
        webhooks.delete_webhook(obj.pk)

    def delete_queryset(self, request, queryset):
        for pk in list(queryset.values_list("pk", flat=True)):
            webhooks.delete_webhook(pk)


@admin.register(AlertSettings)
class AlertSettingsAdmin(admin.ModelAdmin):
    list_display = ("__str__", "session_spike_usd", "error_rate_pct", "error_rate_min_calls")

    def has_add_permission(self, request):
        return not AlertSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        webhooks.save_alert_settings(obj)


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "kind", "severity", "message", "budget", "acknowledged_at")
    list_filter = ("kind", "severity", ("acknowledged_at", admin.EmptyFieldListFilter))
    search_fields = ("message", "subject")
    actions = ["acknowledge"]

    @admin.action(description=gettext_lazy("Acknowledge the selected alerts"))
    def acknowledge(self, request, queryset):
        done = sum(alerts.acknowledge_alert(pk, request.user) for pk in queryset.values_list("pk", flat=True))
        self.message_user(
            request, ngettext("Acknowledged %(n)s alert.", "Acknowledged %(n)s alerts.", done) % {"n": done}
        )

    def has_change_permission(self, request, obj=None):
        return obj is None  # the list (for the action), never a form


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "webhook", "alert", "status", "attempts", "last_status_code", "last_error")
    list_filter = ("status", "webhook")
    list_select_related = ("webhook", "alert")


@admin.register(BudgetCounter)
class BudgetCounterAdmin(ReadOnlyAdmin):
    list_display = ("budget", "subject", "period_start", "spent_tokens", "spent_usd", "reserved_tokens", "in_flight")
    list_filter = ("budget",)
    list_select_related = ("budget",)
    search_fields = ("subject",)


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdmin):
    list_display = ("id", "status", "agent", "session_id", "model", "operation", "tokens", "usd", "expires_at")
    list_filter = ("status",)
    search_fields = ("agent", "session_id")


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "agent",
        "session_id",
        "model",
        "operation",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    )
    list_filter = ("source", "cached", "model")
    search_fields = ("agent", "session_id", "model")
    show_full_result_count = False  # the ledger is large: no COUNT(*) per page
    raw_id_fields = ("price",)


@admin.register(HourlyUsage)
class HourlyUsageAdmin(ReadOnlyAdmin):
    list_display = ("hour", "agent", "model", "operation", "calls", "input_tokens", "output_tokens", "cost_usd")
    list_filter = ("model", "operation")
    show_full_result_count = False


@admin.register(SessionUsage)
class SessionUsageAdmin(ReadOnlyAdmin):
    list_display = ("day", "session_id", "agent", "calls", "tokens", "cost_usd")
    search_fields = ("session_id",)
    show_full_result_count = False
