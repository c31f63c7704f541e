"""Prices, budgets, their per-period counters, reservations (leases), the usage ledger and its rollups,
alerts and the webhooks they are delivered to. Only budgets/actions/ writes these rows."""

from __future__ import annotations

import zoneinfo
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from agentops.lib import netguard

USD = {"max_digits": 16, "decimal_places": 8}
PRICE = {"max_digits": 12, "decimal_places": 6}
ANY_MODEL = "*"  # the price row used for a model without its own


def default_operation_limits() -> dict[str, int]:
    """Per-call token limits by operation (DESIGN.md §7 seed)."""
    return {"planning": 1000, "tool_calls": 2000, "response": 1500, "reflection": 500}


def default_timezone() -> str:
    return settings.BUDGET_TIMEZONE


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            _("%(value)r is not a time zone name (for example Europe/Berlin or UTC)") % {"value": value}
        ) from exc


class ModelPrice(models.Model):
    """The price of a model from ``effective_from`` until the next row for that model. Rows are never
    edited in place: a new price is a new row, so every past call stays priced as it was."""

    model = models.CharField(
        max_length=120,
        help_text=gettext_lazy('model name, or "*" for every unpriced model'),
        verbose_name=gettext_lazy("model"),
    )
    input_per_1k = models.DecimalField(
        **PRICE, validators=[MinValueValidator(Decimal(0))], verbose_name=gettext_lazy("input per 1K tokens (USD)")
    )
    output_per_1k = models.DecimalField(
        **PRICE, validators=[MinValueValidator(Decimal(0))], verbose_name=gettext_lazy("output per 1K tokens (USD)")
    )
    cached_input_per_1k = models.DecimalField(
        **PRICE,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text=gettext_lazy("blank = input price"),
        verbose_name=gettext_lazy("cached input per 1K tokens (USD)"),
    )
    effective_from = models.DateTimeField(verbose_name=gettext_lazy("effective from"))
    note = models.CharField(max_length=200, blank=True, verbose_name=gettext_lazy("note"))
    created_by = models.CharField(max_length=150, blank=True, verbose_name=gettext_lazy("created by"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=gettext_lazy("created at"))

    class Meta:
        ordering = ["model", "-effective_from"]
        verbose_name = gettext_lazy("model price")
        verbose_name_plural = gettext_lazy("model prices")
        constraints = [models.UniqueConstraint(fields=["model", "effective_from"], name="price_model_from")]
        indexes = [models.Index(fields=["model", "-effective_from"], name="price_lookup")]

    def __str__(self) -> str:
        return _("%(model)s from %(time)s") % {"model": self.model, "time": f"{self.effective_from:%Y-%m-%d %H:%M}"}


class Budget(models.Model):
    class Scope(models.TextChoices):
        GLOBAL = "global", gettext_lazy("Global")
        TEAM = "team", gettext_lazy("Team")
        AGENT = "agent", gettext_lazy("Agent")
        SESSION = "session", gettext_lazy("Session")

    class Period(models.TextChoices):
        DAY = "day", gettext_lazy("Day")
        MONTH = "month", gettext_lazy("Month")
        LIFETIME = "lifetime", gettext_lazy("Lifetime")

    class OnBlock(models.TextChoices):
        ESCALATE = "escalate", gettext_lazy("escalate to a reviewer (budget_exceeded)")
        FAIL = "fail", gettext_lazy("fail the call")

    name = models.CharField(max_length=100, unique=True, verbose_name=gettext_lazy("name"))
    scope = models.CharField(
        max_length=10, choices=Scope.choices, default=Scope.GLOBAL, verbose_name=gettext_lazy("scope")
    )
    scope_key = models.CharField(
        max_length=200,
        blank=True,
        help_text=gettext_lazy("team, agent or session id; blank = each one separately"),
        verbose_name=gettext_lazy("scope key"),
    )
    period = models.CharField(
        max_length=10, choices=Period.choices, default=Period.DAY, verbose_name=gettext_lazy("period")
    )
    timezone = models.CharField(
        max_length=64, default=default_timezone, validators=[validate_timezone], verbose_name=gettext_lazy("time zone")
    )
    limit_tokens = models.BigIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], verbose_name=gettext_lazy("token limit")
    )
    limit_usd = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.0001"))],
        verbose_name=gettext_lazy("limit (USD)"),
    )
    soft_threshold_pct = models.PositiveSmallIntegerField(
        default=80,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        verbose_name=gettext_lazy("alert threshold (%)"),
    )
    hard_stop = models.BooleanField(
        default=True,
        help_text=gettext_lazy("refuse calls past the limit (else alert only)"),
        verbose_name=gettext_lazy("hard stop"),
    )
    operation_limits = models.JSONField(
        default=dict,
        blank=True,
        help_text=gettext_lazy("per-call token limit by operation"),
        verbose_name=gettext_lazy("per-operation limits"),
    )
    downgrade_model = models.CharField(
        max_length=120,
        blank=True,
        help_text=gettext_lazy("when blocked, retry the call on this cheaper model"),
        verbose_name=gettext_lazy("downgrade model"),
    )
    on_block = models.CharField(
        max_length=10, choices=OnBlock.choices, default=OnBlock.ESCALATE, verbose_name=gettext_lazy("when blocked")
    )
    enabled = models.BooleanField(default=True, verbose_name=gettext_lazy("enabled"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=gettext_lazy("created at"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=gettext_lazy("updated at"))

    class Meta:
        ordering = ["scope", "name"]
        verbose_name = gettext_lazy("budget")
        verbose_name_plural = gettext_lazy("budgets")
        constraints = [
            models.CheckConstraint(
                condition=Q(limit_tokens__isnull=False) | Q(limit_usd__isnull=False) | ~Q(operation_limits={}),
                name="budget_has_a_limit",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if self.limit_tokens is None and self.limit_usd is None and not self.operation_limits:
            errors["limit_tokens"] = _("Set a token limit, a dollar limit or a per-operation limit.")
        if self.scope == self.Scope.GLOBAL and self.scope_key:
            errors["scope_key"] = gettext_lazy("A global budget applies to everything: leave this blank.")
        if not isinstance(self.operation_limits, dict) or not all(
            isinstance(k, str) and k and isinstance(v, int) and not isinstance(v, bool) and v > 0
            for k, v in (self.operation_limits or {}).items()
        ):
            errors["operation_limits"] = _('Use {"operation": positive whole number of tokens, …}.')
        if errors:
            raise ValidationError(errors)


class BudgetCounter(models.Model):
    """Spent and reserved amounts of one budget, for one subject (team, agent or session; "" for a global
    or a keyed budget), in one period. Locked ``FOR UPDATE`` in id order by reserve/settle/release."""

    budget = models.ForeignKey(
        Budget, on_delete=models.CASCADE, related_name="counters", verbose_name=gettext_lazy("budget")
    )
    subject = models.CharField(max_length=200, blank=True, verbose_name=gettext_lazy("subject"))
    period_start = models.DateTimeField(verbose_name=gettext_lazy("period start"))
    spent_tokens = models.BigIntegerField(default=0, verbose_name=gettext_lazy("spent tokens"))
    spent_usd = models.DecimalField(**USD, default=Decimal(0), verbose_name=gettext_lazy("spent (USD)"))
    reserved_tokens = models.BigIntegerField(default=0, verbose_name=gettext_lazy("reserved tokens"))
    reserved_usd = models.DecimalField(**USD, default=Decimal(0), verbose_name=gettext_lazy("reserved (USD)"))
    in_flight = models.IntegerField(default=0, verbose_name=gettext_lazy("in flight"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=gettext_lazy("updated at"))

    class Meta:
        verbose_name = gettext_lazy("budget counter")
        verbose_name_plural = gettext_lazy("budget counters")
        constraints = [
            models.UniqueConstraint(fields=["budget", "subject", "period_start"], name="counter_per_period"),
            models.CheckConstraint(
                condition=Q(reserved_tokens__gte=0) & Q(reserved_usd__gte=0) & Q(in_flight__gte=0),
                name="counter_reserved_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return _("%(budget)s/%(subject)s from %(day)s") % {
            "budget": self.budget_id,
            "subject": self.subject or "*",
            "day": f"{self.period_start:%Y-%m-%d}",
        }


class Reservation(models.Model):
    """A lease on estimated spend, held against every counter in ``counter_ids`` until settled, released
    or reclaimed after ``expires_at`` (the caller died)."""

    class Status(models.TextChoices):
        HELD = "held", gettext_lazy("Held")
        SETTLED = "settled", gettext_lazy("Settled")
        RELEASED = "released", gettext_lazy("Released")
        EXPIRED = "expired", gettext_lazy("Expired")

    counter_ids = models.JSONField(default=list, verbose_name=gettext_lazy("counters"))
    agent = models.CharField(max_length=80, blank=True, verbose_name=gettext_lazy("agent"))
    run_id = models.BigIntegerField(null=True, blank=True, verbose_name=gettext_lazy("run"))
    session_id = models.CharField(max_length=200, blank=True, verbose_name=gettext_lazy("session"))
    model = models.CharField(max_length=120, blank=True, verbose_name=gettext_lazy("model"))
    operation = models.CharField(max_length=100, blank=True, verbose_name=gettext_lazy("operation"))
    tokens = models.BigIntegerField(verbose_name=gettext_lazy("tokens"))
    usd = models.DecimalField(**USD, verbose_name=gettext_lazy("USD"))
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.HELD, verbose_name=gettext_lazy("status")
    )
    expires_at = models.DateTimeField(verbose_name=gettext_lazy("expires at"))
    created_at = models.DateTimeField(verbose_name=gettext_lazy("created at"))
    closed_at = models.DateTimeField(null=True, blank=True, verbose_name=gettext_lazy("closed at"))

    class Meta:
        verbose_name = gettext_lazy("reservation")
        verbose_name_plural = gettext_lazy("reservations")
        indexes = [
            models.Index(fields=["expires_at"], condition=Q(status="held"), name="reservation_held_expiry"),
        ]

    def __str__(self) -> str:
        return _("reservation %(id)s (%(status)s, %(tokens)s tokens)") % {
            "id": self.pk,
            "status": self.get_status_display(),
            "tokens": self.tokens,
        }


class UsageRecord(models.Model):
    """The ledger: one row per answered LLM call, priced when it was made."""

    agent = models.CharField(max_length=80, blank=True, verbose_name=gettext_lazy("agent"))
    run_id = models.BigIntegerField(null=True, blank=True, verbose_name=gettext_lazy("run"))
    step = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text=gettext_lazy("the run's step (seq) that made the call"),
        verbose_name=gettext_lazy("step"),
    )
    session_id = models.CharField(max_length=200, blank=True, verbose_name=gettext_lazy("session"))
    model = models.CharField(max_length=120, verbose_name=gettext_lazy("model"))
    provider = models.CharField(max_length=80, blank=True, verbose_name=gettext_lazy("provider"))
    operation = models.CharField(max_length=100, verbose_name=gettext_lazy("operation"))
    input_tokens = models.IntegerField(default=0, verbose_name=gettext_lazy("input tokens"))
    output_tokens = models.IntegerField(default=0, verbose_name=gettext_lazy("output tokens"))
    cached_tokens = models.IntegerField(default=0, verbose_name=gettext_lazy("cached tokens"))
    cost_usd = models.DecimalField(**USD, default=Decimal(0), verbose_name=gettext_lazy("cost (USD)"))
    price = models.ForeignKey(
        ModelPrice, null=True, blank=True, on_delete=models.PROTECT, verbose_name=gettext_lazy("price")
    )
    cached = models.BooleanField(
        default=False, help_text=gettext_lazy("answered from the cache"), verbose_name=gettext_lazy("cached")
    )
    reservation_id = models.BigIntegerField(null=True, blank=True, verbose_name=gettext_lazy("reservation"))
    source = models.CharField(
        max_length=20, default="run", help_text=gettext_lazy("run, api or gateway"), verbose_name=gettext_lazy("source")
    )
    rolled_up = models.BooleanField(default=False, verbose_name=gettext_lazy("rolled up"))
    created_at = models.DateTimeField(db_index=True, verbose_name=gettext_lazy("created at"))

    class Meta:
        verbose_name = gettext_lazy("usage record")
        verbose_name_plural = gettext_lazy("usage records")
        indexes = [
            models.Index(fields=["id"], condition=Q(rolled_up=False), name="usage_not_rolled"),
            models.Index(fields=["session_id", "created_at"], name="usage_session_time"),
            models.Index(fields=["run_id"], condition=Q(run_id__isnull=False), name="usage_run"),
            models.Index(
                fields=["reservation_id"], condition=Q(reservation_id__isnull=False), name="usage_reservation"
            ),
        ]

    def __str__(self) -> str:
        return _("%(model)s %(operation)s %(input)s+%(output)s tokens $%(cost)s") % {
            "model": self.model,
            "operation": self.operation,
            "input": self.input_tokens,
            "output": self.output_tokens,
            "cost": self.cost_usd,
        }

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class HourlyUsage(models.Model):
    """Usage summed per hour × agent × model × operation (kept current by ``roll_up_usage``)."""

    hour = models.DateTimeField(verbose_name=gettext_lazy("hour"))
    agent = models.CharField(max_length=80, blank=True, verbose_name=gettext_lazy("agent"))
    model = models.CharField(max_length=120, verbose_name=gettext_lazy("model"))
    operation = models.CharField(max_length=100, verbose_name=gettext_lazy("operation"))
    calls = models.BigIntegerField(default=0, verbose_name=gettext_lazy("calls"))
    cache_hits = models.BigIntegerField(default=0, verbose_name=gettext_lazy("cache hits"))
    input_tokens = models.BigIntegerField(default=0, verbose_name=gettext_lazy("input tokens"))
    output_tokens = models.BigIntegerField(default=0, verbose_name=gettext_lazy("output tokens"))
    cached_tokens = models.BigIntegerField(default=0, verbose_name=gettext_lazy("cached tokens"))
    cost_usd = models.DecimalField(
        max_digits=20, decimal_places=8, default=Decimal(0), verbose_name=gettext_lazy("cost (USD)")
    )

    class Meta:
        verbose_name = verbose_name_plural = gettext_lazy("hourly usage")
        constraints = [models.UniqueConstraint(fields=["hour", "agent", "model", "operation"], name="hourly_usage_key")]
        indexes = [models.Index(fields=["hour"], name="hourly_usage_hour")]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h {self.agent} {self.model} {self.operation}"


class DailyUsage(models.Model):
    """Usage summed per UTC day × agent × model × operation: the dashboard's 30 days read ~30 × a few rows
    instead of every hour of them."""

    day = models.DateField()
    agent = models.CharField(max_length=80, blank=True)
    model = models.CharField(max_length=120)
    operation = models.CharField(max_length=100)
    calls = models.BigIntegerField(default=0)
    cache_hits = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=Decimal(0))

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "agent", "model", "operation"], name="daily_usage_key")]

    def __str__(self) -> str:
        return f"{self.day} {self.agent} {self.model} {self.operation}"


class SessionUsage(models.Model):
    """Usage summed per UTC day × session (top sessions)."""

    day = models.DateField(verbose_name=gettext_lazy("day"))
    session_id = models.CharField(max_length=200, verbose_name=gettext_lazy("session"))
    agent = models.CharField(max_length=80, blank=True, verbose_name=gettext_lazy("agent"))
    calls = models.BigIntegerField(default=0, verbose_name=gettext_lazy("calls"))
    tokens = models.BigIntegerField(default=0, verbose_name=gettext_lazy("tokens"))
    cost_usd = models.DecimalField(
        max_digits=20, decimal_places=8, default=Decimal(0), verbose_name=gettext_lazy("cost (USD)")
    )

    class Meta:
        verbose_name = verbose_name_plural = gettext_lazy("session usage")
        constraints = [models.UniqueConstraint(fields=["day", "session_id", "agent"], name="session_usage_key")]
        indexes = [models.Index(fields=["day", "-cost_usd"], name="session_usage_top")]

    def __str__(self) -> str:
        return f"{self.day} {self.session_id}"


class AlertSettings(models.Model):
    """The one row of alert thresholds that are not budgets of their own (DESIGN.md §11)."""

    # The seed's alerts (DESIGN.md §11): daily budget $100, session spike 10 in one hour, error rate > 10 % over
    # 5 minutes. The seed names the spike "10" without a unit; here it is US dollars one session spends.
    daily_spend_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        default=Decimal("100.00"),
        validators=[MinValueValidator(Decimal(0))],
        help_text=gettext_lazy(
            "US dollars: alert when all agents together spend more than this today (the server's time zone; "
            "runs, gateway and reported usage alike). 0 turns the alert off."
        ),
        verbose_name=gettext_lazy("daily spend (USD)"),
    )
    session_spike_usd = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        default=Decimal("10.00"),
        validators=[MinValueValidator(Decimal(0))],
        help_text=gettext_lazy(
            "US dollars: alert when one session (one agent's session id) spends more than this in the last hour."
        ),
        verbose_name=gettext_lazy("session spike (USD)"),
    )
    error_rate_pct = models.PositiveSmallIntegerField(
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text=gettext_lazy(
            "alert when more than this share of LLM calls failed over the last 5 minutes (every call: runs, "
            "the gateway and usage agents report)"
        ),
        verbose_name=gettext_lazy("error rate (%)"),
    )
    error_rate_min_calls = models.PositiveIntegerField(
        default=20,
        help_text=gettext_lazy("…out of at least this many calls"),
        verbose_name=gettext_lazy("error rate: minimum calls"),
    )

    class Meta:
        verbose_name = verbose_name_plural = gettext_lazy("alert settings")

    def __str__(self) -> str:
        return _("alert settings")

    def save(self, *args, **kwargs):
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def current(cls) -> AlertSettings:
        return cls.objects.get_or_create(pk=1)[0]


class Alert(models.Model):
    class Kind(models.TextChoices):
        SOFT_THRESHOLD = "soft_threshold", gettext_lazy("soft threshold crossed")
        EXHAUSTED = "exhausted", gettext_lazy("budget exhausted")
        DAILY_OVER = "daily_over", gettext_lazy("daily total over its limit")
        SESSION_SPIKE = "session_spike", gettext_lazy("session spending spike")
        ERROR_RATE = "error_rate", gettext_lazy("error rate high")
        TEST = "test", gettext_lazy("test alert")

    class Severity(models.TextChoices):
        INFO = "info", gettext_lazy("Info")
        WARNING = "warning", gettext_lazy("Warning")
        CRITICAL = "critical", gettext_lazy("Critical")

    kind = models.CharField(max_length=20, choices=Kind.choices, verbose_name=gettext_lazy("kind"))
    severity = models.CharField(
        max_length=10, choices=Severity.choices, default=Severity.WARNING, verbose_name=gettext_lazy("severity")
    )
    budget = models.ForeignKey(
        Budget,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="alerts",
        verbose_name=gettext_lazy("budget"),
    )
    subject = models.CharField(max_length=200, blank=True, verbose_name=gettext_lazy("subject"))
    message = models.CharField(max_length=500, verbose_name=gettext_lazy("message"))
    details = models.JSONField(default=dict, blank=True, verbose_name=gettext_lazy("details"))
    # What makes one crossing one alert: a second alert for the same key is never created.
    dedup_key = models.CharField(max_length=300, unique=True, verbose_name=gettext_lazy("deduplication key"))
    created_at = models.DateTimeField(verbose_name=gettext_lazy("created at"))
    acknowledged_at = models.DateTimeField(null=True, blank=True, verbose_name=gettext_lazy("acknowledged at"))
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        verbose_name=gettext_lazy("acknowledged by"),
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = gettext_lazy("alert")
        verbose_name_plural = gettext_lazy("alerts")
        indexes = [models.Index(fields=["-created_at"], condition=Q(acknowledged_at=None), name="alert_open")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message}"


class Webhook(models.Model):
    """A Slack-compatible incoming-webhook URL that receives every alert."""

    name = models.CharField(max_length=100, verbose_name=gettext_lazy("name"))
    url = models.URLField(max_length=500, verbose_name=gettext_lazy("URL"))
    enabled = models.BooleanField(default=True, verbose_name=gettext_lazy("enabled"))
    min_severity = models.CharField(
        max_length=10,
        choices=Alert.Severity.choices,
        default=Alert.Severity.INFO,
        verbose_name=gettext_lazy("minimum severity"),
    )
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=gettext_lazy("created at"))

    class Meta:
        verbose_name = gettext_lazy("Webhook")
        verbose_name_plural = gettext_lazy("Webhooks")

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        refusal = netguard.refusal_at_save(self.url) if self.url else None
        if refusal:
            raise ValidationError({"url": refused_url_message(refusal)})


def refused_url_message(refusal: str) -> str:
    return _(
        "Webhooks may only reach public addresses: %(why)s. An operator can allow a private host with "
        "AGENTOPS_ALLOW_PRIVATE_URLS."
    ) % {"why": refusal}


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", gettext_lazy("Pending")
        DELIVERED = "delivered", gettext_lazy("Delivered")
        RETRYING = "retrying", gettext_lazy("Retrying")
        FAILED = "failed", gettext_lazy("Failed")

    webhook = models.ForeignKey(
        Webhook, on_delete=models.CASCADE, related_name="deliveries", verbose_name=gettext_lazy("Webhook")
    )
    alert = models.ForeignKey(
        Alert, on_delete=models.CASCADE, related_name="deliveries", verbose_name=gettext_lazy("alert")
    )
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, verbose_name=gettext_lazy("status")
    )
    attempts = models.PositiveSmallIntegerField(default=0, verbose_name=gettext_lazy("attempts"))
    last_status_code = models.PositiveSmallIntegerField(
        null=True, blank=True, verbose_name=gettext_lazy("last status code")
    )
    last_error = models.CharField(max_length=500, blank=True, verbose_name=gettext_lazy("last error"))
    created_at = models.DateTimeField(verbose_name=gettext_lazy("created at"))
    updated_at = models.DateTimeField(verbose_name=gettext_lazy("updated at"))
    delivered_at = models.DateTimeField(null=True, blank=True, verbose_name=gettext_lazy("delivered at"))
    log = models.JSONField(
        default=list,
        blank=True,
        help_text=gettext_lazy("one entry per attempt: at, status code, error"),
        verbose_name=gettext_lazy("log"),
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = gettext_lazy("Webhook delivery")
        verbose_name_plural = gettext_lazy("Webhook deliveries")
        constraints = [models.UniqueConstraint(fields=["webhook", "alert"], name="one_delivery_per_alert")]

    def __str__(self) -> str:
        return _("delivery of alert %(alert)s to %(webhook)s (%(status)s)") % {
            "alert": self.alert_id,
            "webhook": self.webhook_id,
            "status": self.get_status_display(),
        }
