"""agentops models. Runtime settings an admin can change live here; runs and agents come later.

Every write goes through agentops/actions.py, which bumps a version key in Redis after commit so that
every worker reloads the runtime config within about a second, without a restart.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext as _

from agentops import netguard
from agentops.runtime.errors import ErrorClass


def validate_regex(value: str) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValidationError(f"Not a valid regular expression: {exc}") from None


def validate_regex_lines(value: str) -> None:
    for number, line in enumerate(value.splitlines(), start=1):
        if line.strip():
            try:
                re.compile(line.strip())
            except re.error as exc:
                raise ValidationError(f"Line {number} is not a valid regular expression: {exc}") from None


class Provider(models.Model):
    """An upstream that answers chat completions."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible HTTP API"
        SIMULATED = "simulated", "Simulated (offline, deterministic)"

    name = models.SlugField(max_length=50, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.SIMULATED)
    base_url = models.URLField(blank=True, help_text="For OpenAI-compatible providers, e.g. https://api.openai.com/v1")
    api_key = models.CharField(max_length=300, blank=True, help_text="Stored as given; leave blank for none.")
    latency_ms = models.PositiveIntegerField(default=0, help_text="Simulated providers: added latency.")
    fault_rate = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Simulated providers: share of calls that fail with a transient error.",
    )
    served_models = models.CharField(
        max_length=1000,
        blank=True,
        help_text="Models this provider serves, comma-separated: the gateway sends a request naming one here "
        "and lists them at /v1/models.",
    )
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def model_names(self) -> list[str]:
        return [name.strip() for name in self.served_models.split(",") if name.strip()]

    def clean(self) -> None:
        if self.kind == self.Kind.OPENAI and not self.base_url:
            raise ValidationError({"base_url": "An OpenAI-compatible provider needs a base URL."})
        refusal = netguard.refusal_at_save(self.base_url) if self.base_url else None
        if refusal:
            raise ValidationError(
                {
                    "base_url": _(
                        "A provider may only be reached at a public address: %(why)s. An operator can allow a "
                        "private host with AGENTOPS_ALLOW_PRIVATE_URLS."
                    )
                    % {"why": refusal}
                }
            )


class ModelRoute(models.Model):
    """Which model answers an operation, and the fallback chain after it."""

    operation = models.SlugField(max_length=50, unique=True, help_text="e.g. planning, classify, response")
    primary_provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="+")
    primary_model = models.CharField(max_length=100)
    backup_provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="+", null=True, blank=True)
    backup_model = models.CharField(max_length=100, blank=True)
    use_rules = models.BooleanField(default=True, help_text="Try the rule engine after the models.")
    use_human = models.BooleanField(default=True, help_text="Hand off to a human when everything else failed.")

    class Meta:
        ordering = ["operation"]

    def __str__(self) -> str:
        return f"{self.operation} → {self.primary_provider}:{self.primary_model}"

    def clean(self) -> None:
        if bool(self.backup_provider_id) != bool(self.backup_model):
            raise ValidationError("Give both a backup provider and a backup model, or neither.")


class RetryPolicy(models.Model):
    """Retries for one error class (the seed's defaults are created by a migration)."""

    error_class = models.CharField(max_length=40, unique=True, choices=[(c.value, c.value) for c in ErrorClass])
    max_retries = models.PositiveSmallIntegerField(validators=[MaxValueValidator(20)])
    base_delay = models.FloatField(validators=[MinValueValidator(0.0), MaxValueValidator(600.0)], help_text="seconds")
    max_delay = models.FloatField(validators=[MinValueValidator(0.0), MaxValueValidator(3600.0)], help_text="seconds")
    multiplier = models.FloatField(default=2.0, validators=[MinValueValidator(1.0), MaxValueValidator(10.0)])
    jitter = models.BooleanField(default=True)

    class Meta:
        ordering = ["error_class"]
        verbose_name_plural = "retry policies"

    def __str__(self) -> str:
        return f"{self.error_class}: {self.max_retries} × {self.base_delay}s"


class FallbackRule(models.Model):
    """Rule engine: the first enabled rule whose pattern matches the last user message answers."""

    name = models.SlugField(max_length=50, unique=True)
    pattern = models.CharField(max_length=500, validators=[validate_regex], help_text="Python regex, case-insensitive")
    answer = models.TextField(help_text="May use {0}, {1} or {name} from the pattern's groups.")
    operations = models.CharField(max_length=200, blank=True, help_text="Comma-separated; blank = every operation")
    position = models.PositiveSmallIntegerField(default=100)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["position", "name"]

    def __str__(self) -> str:
        return self.name


class RuntimeSettings(models.Model):
    """The one row of scalar tunables (timeouts, breaker, retry budget, validation, cache, default chain)."""

    llm_timeout = models.FloatField(default=30.0, validators=[MinValueValidator(0.1)])
    tool_timeout = models.FloatField(default=60.0, validators=[MinValueValidator(0.1)])
    request_timeout = models.FloatField(default=300.0, validators=[MinValueValidator(1.0)])
    human_timeout = models.FloatField(default=600.0, validators=[MinValueValidator(1.0)])
    adaptive_timeouts = models.BooleanField(default=True, help_text="p95 × 1.5 clamped 10–120 s once ≥ 5 samples")
    breaker_failure_threshold = models.PositiveSmallIntegerField(default=5, validators=[MinValueValidator(1)])
    breaker_recovery_seconds = models.FloatField(default=60.0, validators=[MinValueValidator(0.1)])
    breaker_half_open_probes = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1)])
    retry_budget = models.PositiveSmallIntegerField(default=6, help_text="Retries per call across the whole chain")
    min_answer_chars = models.PositiveSmallIntegerField(default=2)
    refusal_patterns = models.TextField(
        blank=True, validators=[validate_regex_lines], help_text="One regex per line; blank = built-in patterns"
    )
    cacheable_operations = models.CharField(max_length=300, default="classify", blank=True)
    default_provider = models.ForeignKey(Provider, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    default_model = models.CharField(max_length=100, blank=True)
    backup_provider = models.ForeignKey(Provider, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    backup_model = models.CharField(max_length=100, blank=True)

    class GatewayCache(models.TextChoices):
        DETERMINISTIC = "deterministic", "Only requests with temperature 0 and no tools"
        ALWAYS = "always", "Every non-streaming request"
        OFF = "off", "Never"

    gateway_cache = models.CharField(
        max_length=15,
        choices=GatewayCache.choices,
        default=GatewayCache.DETERMINISTIC,
        help_text="Which /v1/chat/completions requests the gateway answers from the cache.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = verbose_name_plural = "runtime settings"

    def __str__(self) -> str:
        return "Runtime settings"


# --- agents, runs and the step journal -------------------------------------------------------------
class Agent(models.Model):
    """A registered agent function (agentops/agents/ or AGENTOPS_AGENT_MODULES) or an external agent
    that calls the REST API."""

    name = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True)

    class ToolReview(models.TextChoices):
        HOLD = "hold", "Hold the answer until a reviewer decides"
        ANNOTATE = "annotate", "Answer at once; the escalation is raised beside it"
        OFF = "off", "No review of tool calls"

    team = models.SlugField(max_length=80, blank=True, help_text="For team budgets")
    enabled = models.BooleanField(default=True)
    gateway_tool_review = models.CharField(
        max_length=10,
        choices=ToolReview.choices,
        default=ToolReview.HOLD,
        help_text="Gateway answers whose tool calls the escalation policy finds sensitive.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Run(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        WAITING_HUMAN = "waiting_human"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    error_class = models.CharField(max_length=60, blank=True)
    session_id = models.CharField(max_length=200, blank=True, db_index=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    trace_id = models.CharField(max_length=32, blank=True)
    # lease: the worker executing the run renews it with heartbeats; beat reclaims expired ones
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    executions = models.PositiveIntegerField(default=0, help_text="How many times a worker started this run")
    active_seconds = models.FloatField(default=0.0, help_text="Execution time so far, human waits excluded")
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    version = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "idempotency_key"], condition=~models.Q(idempotency_key=""), name="run_idempotency"
            )
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.agent_id}, {self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL


class Step(models.Model):
    """The journal: one row per ctx call of a run, in order."""

    class Status(models.TextChoices):
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        SKIPPED = "skipped"
        WAITING_HUMAN = "waiting_human"
        DECIDED = "decided"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=10)  # llm | tool | phase
    name = models.CharField(max_length=100)
    phase = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING)
    arguments = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    decision = models.JSONField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    executions = models.PositiveIntegerField(default=0, help_text="Times the work of this step started")
    error_class = models.CharField(max_length=60, blank=True)
    error = models.TextField(blank=True)
    hops = models.JSONField(default=list, blank=True)
    cache_hit = models.BooleanField(default=False)
    handler = models.CharField(max_length=40, blank=True)
    model = models.CharField(max_length=100, blank=True)
    duration_ms = models.FloatField(default=0.0)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    idempotency_key = models.CharField(max_length=100, blank=True)
    escalation_id = models.BigIntegerField(null=True, blank=True)
    end_seq = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="step_run_seq")]

    def __str__(self) -> str:
        return f"run {self.run_id} step {self.seq} {self.kind} {self.name} ({self.status})"


class ToolEffect(models.Model):
    """Exactly-once record of a side effect, keyed by the step's idempotency key (run:<id>:step:<seq>).

    A side-effecting tool that is re-executed after a crash finds its key and does not act twice."""

    idempotency_key = models.CharField(max_length=100, unique=True)
    tool = models.CharField(max_length=100)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.tool} {self.idempotency_key}"


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

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # The key's fair share of the gateway: requests in flight at once, across every web process
    # (agentops/inflight.py); one more answers 429 until one ends.
    max_in_flight = models.PositiveIntegerField(
        default=16,
        validators=[MinValueValidator(1), MaxValueValidator(10_000)],
        help_text="gateway requests this key may have in flight at once (all web processes together)",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.agent.name} {self.prefix}…"

    @property
    def active(self) -> bool:
        return self.revoked_at is None
