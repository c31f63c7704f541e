"""API keys: one row per key, only a hash of the secret stored. The table keeps the ``agentops`` app label."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from agentops.runs.models import Agent


class ApiKey(models.Model):
    """An agent's key for the REST API and the gateway. Only a SHA-256 of the secret is stored; the key is
    shown once when created. ``prefix`` (public, unique) finds the row; the hash is compared in constant
    time."""

    class Scope(models.TextChoices):
        RUNS = "runs"
        ACTIONS = "actions"
        USAGE = "usage"
        BUDGETS_READ = "budgets:read"
        GATEWAY = "gateway"
        ADMIN = "admin"

    AGENT_SCOPES = ("runs", "actions", "usage", "budgets:read", "gateway")

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="api_keys", verbose_name=_("agent"))
    name = models.CharField(max_length=100, blank=True, verbose_name=_("name"))
    prefix = models.CharField(max_length=16, unique=True, verbose_name=_("prefix"))
    secret_hash = models.CharField(max_length=64, verbose_name=_("secret hash"))
    scopes = models.JSONField(default=list, verbose_name=_("scopes"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created at"))
    created_by = models.CharField(max_length=150, blank=True, verbose_name=_("created by"))
    last_used_at = models.DateTimeField(null=True, blank=True, verbose_name=_("last used at"))
    revoked_at = models.DateTimeField(null=True, blank=True, verbose_name=_("revoked at"))
    # The key's fair share of the gateway: requests in flight at once, across every web process
    # (agentops/lib/inflight.py); one more answers 429 until one ends.
    max_in_flight = models.PositiveIntegerField(
        default=16,
        validators=[MinValueValidator(1), MaxValueValidator(10_000)],
        help_text=_("gateway requests this key may have in flight at once (all web processes together)"),
        verbose_name=_("requests in flight at most"),
    )
    # Set on the Agents screen (agentops/keys/views.py). An expired key is refused like a revoked one.
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text=_("refused like a revoked key from then on"), verbose_name=_("expires at")
    )
    # Models (route or model names, exactly as a request names them) this key may call on /v1; empty = all.
    allowed_models = models.JSONField(default=list, blank=True, verbose_name=_("allowed models"))
    # Requests a minute on /api/v1 and /v1 (agentops/lib/ratelimit.py); empty = the global API_RATE_* default.
    rate_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(1_000_000)],
        help_text=_("requests a minute on /api/v1 and /v1; empty = the global default"),
        verbose_name=_("requests a minute"),
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self) -> str:
        return f"{self.agent.name} {self.prefix}…"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def expired(self, now) -> bool:
        return self.expires_at is not None and self.expires_at <= now
