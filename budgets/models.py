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

    model = models.CharField(max_length=120, help_text=f'model name, or "{ANY_MODEL}" for every unpriced model')
    input_per_1k = models.DecimalField(**PRICE, validators=[MinValueValidator(Decimal(0))])
    output_per_1k = models.DecimalField(**PRICE, validators=[MinValueValidator(Decimal(0))])
    cached_input_per_1k = models.DecimalField(
        **PRICE,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text=gettext_lazy("blank = input price"),
    )
    effective_from = models.DateTimeField()
    note = models.CharField(max_length=200, blank=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [models.UniqueConstraint(fields=["model", "effective_from"], name="price_model_from")]
        indexes = [models.Index(fields=["model", "-effective_from"], name="price_lookup")]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from:%Y-%m-%d %H:%M}"


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

    name = models.CharField(max_length=100, unique=True)
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.GLOBAL)
    scope_key = models.CharField(
        max_length=200, blank=True, help_text=gettext_lazy("team, agent or session id; blank = each one separately")
    )
    period = models.CharField(max_length=10, choices=Period.choices, default=Period.DAY)
    timezone = models.CharField(max_length=64, default=default_timezone, validators=[validate_timezone])
    limit_tokens = models.BigIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    limit_usd = models.DecimalField(
        max_digits=14, decimal_places=4, null=True, blank=True, validators=[MinValueValidator(Decimal("0.0001"))]
    )
    soft_threshold_pct = models.PositiveSmallIntegerField(
        default=80, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    hard_stop = models.BooleanField(
        default=True, help_text=gettext_lazy("refuse calls past the limit (else alert only)")
    )
    operation_limits = models.JSONField(
        default=dict, blank=True, help_text=gettext_lazy("per-call token limit by operation")
    )
    downgrade_model = models.CharField(
        max_length=120, blank=True, help_text=gettext_lazy("when blocked, retry the call on this cheaper model")
    )
    on_block = models.CharField(max_length=10, choices=OnBlock.choices, default=OnBlock.ESCALATE)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope", "name"]
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
            errors["limit_tokens"] = "Set a token limit, a dollar limit or a per-operation limit."
        if self.scope == self.Scope.GLOBAL and self.scope_key:
            errors["scope_key"] = gettext_lazy("A global budget applies to everything: leave this blank.")
        if not isinstance(self.operation_limits, dict) or not all(
            isinstance(k, str) and k and isinstance(v, int) and not isinstance(v, bool) and v > 0
            for k, v in (self.operation_limits or {}).items()
        ):
            errors["operation_limits"] = 'Use {"operation": positive whole number of tokens, …}.'
        if errors:
            raise ValidationError(errors)


class BudgetCounter(models.Model):
    """Spent and reserved amounts of one budget, for one subject (team, agent or session; "" for a global
    or a keyed budget), in one period. Locked ``FOR UPDATE`` in id order by reserve/settle/release."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="counters")
    subject = models.CharField(max_length=200, blank=True)
    period_start = models.DateTimeField()
    spent_tokens = models.BigIntegerField(default=0)
    spent_usd = models.DecimalField(**USD, default=Decimal(0))
    reserved_tokens = models.BigIntegerField(default=0)
    reserved_usd = models.DecimalField(**USD, default=Decimal(0))
    in_flight = models.IntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["budget", "subject", "period_start"], name="counter_per_period"),
            models.CheckConstraint(
                condition=Q(reserved_tokens__gte=0) & Q(reserved_usd__gte=0) & Q(in_flight__gte=0),
                name="counter_reserved_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.budget_id}/{self.subject or '*'} from {self.period_start:%Y-%m-%d}"


class Reservation(models.Model):
    """A lease on estimated spend, held against every counter in ``counter_ids`` until settled, released
    or reclaimed after ``expires_at`` (the caller died)."""

    class Status(models.TextChoices):
        HELD = "held", gettext_lazy("Held")
        SETTLED = "settled", gettext_lazy("Settled")
        RELEASED = "released", gettext_lazy("Released")
        EXPIRED = "expired", gettext_lazy("Expired")

    counter_ids = models.JSONField(default=list)
    agent = models.CharField(max_length=80, blank=True)
    run_id = models.BigIntegerField(null=True, blank=True)
    session_id = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=120, blank=True)
    operation = models.CharField(max_length=100, blank=True)
    tokens = models.BigIntegerField()
    usd = models.DecimalField(**USD)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.HELD)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["expires_at"], condition=Q(status="held"), name="reservation_held_expiry"),
        ]

    def __str__(self) -> str:
        return f"reservation {self.pk} ({self.status}, {self.tokens} tokens)"


class UsageRecord(models.Model):
    """The ledger: one row per answered LLM call, priced when it was made."""

    agent = models.CharField(max_length=80, blank=True)
    run_id = models.BigIntegerField(null=True, blank=True)
    step = models.PositiveIntegerField(null=True, blank=True, help_text="the run's step (seq) that made the call")
    session_id = models.CharField(max_length=200, blank=True)
    model = models.CharField(max_length=120)
    provider = models.CharField(max_length=80, blank=True)
    operation = models.CharField(max_length=100)
    input_tokens = models.IntegerField(default=0)
    output_tokens = models.IntegerField(default=0)
    cached_tokens = models.IntegerField(default=0)
    cost_usd = models.DecimalField(**USD, default=Decimal(0))
    price = models.ForeignKey(ModelPrice, null=True, blank=True, on_delete=models.PROTECT)
    cached = models.BooleanField(default=False, help_text="answered from the cache")
    reservation_id = models.BigIntegerField(null=True, blank=True)
    source = models.CharField(max_length=20, default="run", help_text="run, api or gateway")
    rolled_up = models.BooleanField(default=False)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [
            models.Index(fields=["id"], condition=Q(rolled_up=False), name="usage_not_rolled"),
            models.Index(fields=["session_id", "created_at"], name="usage_session_time"),
            models.Index(fields=["run_id"], condition=Q(run_id__isnull=False), name="usage_run"),
            models.Index(
                fields=["reservation_id"], condition=Q(reservation_id__isnull=False), name="usage_reservation"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.operation} {self.input_tokens}+{self.output_tokens} tokens ${self.cost_usd}"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class HourlyUsage(models.Model):
    """Usage summed per hour × agent × model × operation (kept current by ``roll_up_usage``)."""

    hour = models.DateTimeField()
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

    day = models.DateField()
    session_id = models.CharField(max_length=200)
    agent = models.CharField(max_length=80, blank=True)
    calls = models.BigIntegerField(default=0)
    tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=Decimal(0))

    class Meta:
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
    )
    session_spike_usd = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        default=Decimal("10.00"),
        validators=[MinValueValidator(Decimal(0))],
        help_text=gettext_lazy(
            "US dollars: alert when one session (one agent's session id) spends more than this in the last hour."
        ),
    )
    error_rate_pct = models.PositiveSmallIntegerField(
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text=gettext_lazy(
            "alert when more than this share of LLM calls failed over the last 5 minutes (every call: runs, "
            "the gateway and usage agents report)"
        ),
    )
    error_rate_min_calls = models.PositiveIntegerField(
        default=20, help_text=gettext_lazy("…out of at least this many calls")
    )

    def __str__(self) -> str:
        return "alert settings"

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

    kind = models.CharField(max_length=20, choices=Kind.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    budget = models.ForeignKey(Budget, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts")
    subject = models.CharField(max_length=200, blank=True)
    message = models.CharField(max_length=500)
    details = models.JSONField(default=dict, blank=True)
    # What makes one crossing one alert: a second alert for the same key is never created.
    dedup_key = models.CharField(max_length=300, unique=True)
    created_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["-created_at"], condition=Q(acknowledged_at=None), name="alert_open")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message}"


class Webhook(models.Model):
    """A Slack-compatible incoming-webhook URL that receives every alert."""

    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    enabled = models.BooleanField(default=True)
    min_severity = models.CharField(max_length=10, choices=Alert.Severity.choices, default=Alert.Severity.INFO)
    created_at = models.DateTimeField(auto_now_add=True)

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

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)
    log = models.JSONField(default=list, blank=True, help_text="one entry per attempt: at, status code, error")

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["webhook", "alert"], name="one_delivery_per_alert")]

    def __str__(self) -> str:
        return f"delivery of alert {self.alert_id} to {self.webhook_id} ({self.status})"
