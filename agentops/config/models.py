"""Runtime configuration an admin changes live: providers, model routes, retry policies, fallback rules and
the runtime settings. Every write goes through agentops/config/actions.py, which bumps a version key in Redis
after commit so that every worker reloads the runtime config within about a second, without a restart.

The tables keep the ``agentops`` app label (agentops/runs/models.py registers these models under it)."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from agentops.lib import netguard
from agentops.runtime.errors import ErrorClass
from agentops.runtime.timeouts import STEP_DEFAULTS

STEP_PHASES = tuple(STEP_DEFAULTS)  # each has a <phase>_timeout and a <phase>_critical field below


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


def validate_threshold(value: float) -> None:
    """A cosine similarity threshold: above 0, at most 1."""
    if not 0 < value <= 1:
        raise ValidationError(_("The threshold must be above 0 and at most 1."))


class Provider(models.Model):
    """An upstream that answers chat completions."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible HTTP API"
        ANTHROPIC = "anthropic", "Anthropic Messages API"
        SIMULATED = "simulated", "Simulated (offline, deterministic)"

    name = models.SlugField(max_length=50, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.SIMULATED)
    base_url = models.URLField(
        blank=True,
        help_text="For OpenAI-compatible providers, e.g. https://api.openai.com/v1; for Anthropic, the API's root "
        "(blank: https://api.anthropic.com).",
    )
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
    speaks_responses = models.BooleanField(
        default=False,
        help_text="OpenAI-compatible providers: it answers OpenAI's Responses API (POST /responses) itself, so the "
        "gateway's /v1/responses is passed to it natively instead of being translated to chat completions.",
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
    # Result validation for this route's answers (agentops.runtime.validation): off = the runtime settings'.
    own_answer_checks = models.BooleanField(
        default=False,
        help_text=gettext_lazy(
            "Check this route's answers with the minimum length and rejected phrases below instead of the "
            "runtime settings' (e.g. a coding route whose answers legitimately contain 'error': clear the phrases)."
        ),
    )
    min_answer_chars = models.PositiveSmallIntegerField(
        default=10,
        help_text=gettext_lazy("With own answer checks: a shorter answer goes to the next handler (0: any length)."),
    )
    rejected_phrases = models.TextField(
        blank=True,
        default="I don't know\nerror",
        help_text=gettext_lazy(
            "With own answer checks: one phrase per line, plain text matched anywhere in the answer, ignoring "
            "case; an answer containing one goes to the next handler. Blank: no phrase is rejected."
        ),
    )

    # The semantic cache (agentops.runtime.semantic_cache): off unless turned on here.
    semantic_cache = models.BooleanField(
        default=False,
        verbose_name=gettext_lazy("semantic cache"),
        help_text=gettext_lazy(
            "Answer a cacheable request from a cached answer to a question that means the same (same agent, "
            "system prompt, tools and settings; the same numbers, negations, quoted text and names)."
        ),
    )
    semantic_threshold = models.FloatField(
        default=0.92,
        validators=[validate_threshold],
        verbose_name=gettext_lazy("similarity threshold"),
        help_text=gettext_lazy(
            "Cosine similarity a cached question needs to answer, above 0 and at most 1 (1: only the same "
            "wording). Lower answers more paraphrases and risks more wrong answers."
        ),
    )
    semantic_ttl = models.PositiveIntegerField(
        default=3600,
        validators=[MinValueValidator(1)],
        verbose_name=gettext_lazy("semantic cache TTL"),
        help_text=gettext_lazy("Seconds a cached answer may answer similar questions."),
    )
    semantic_embeddings_model = models.CharField(
        max_length=100,
        blank=True,
        verbose_name=gettext_lazy("embeddings model"),
        help_text=gettext_lazy(
            "The embeddings model that compares questions, called through the gateway's embeddings path "
            "(budgeted and metered). Blank: the built-in offline embedder, which matches rewordings but not "
            "synonyms."
        ),
    )

    class Meta:
        ordering = ["operation"]

    def __str__(self) -> str:
        return f"{self.operation} → {self.primary_provider}:{self.primary_model}"

    def clean(self) -> None:
        if bool(self.backup_provider_id) != bool(self.backup_model):
            raise ValidationError("Give both a backup provider and a backup model, or neither.")


class RetryPolicy(models.Model):
    """Retries for one error class (the seed's defaults are created by a migration; one row per class)."""

    error_class = models.CharField(
        max_length=40,
        unique=True,
        choices=[(c.value, f"{c.value} ({c.category.kind}: {c.category.value})") for c in ErrorClass],
    )
    max_retries = models.PositiveSmallIntegerField(
        validators=[MaxValueValidator(20)],
        help_text="Retries after the first try. Permanent classes (AuthenticationError, BadRequest, RejectedAnswer, "
        "LogicError, BudgetExceeded) are never retried: the call moves on to the next handler.",
    )
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
    human_timeout = models.FloatField(
        default=600.0,
        validators=[MinValueValidator(1.0)],
        help_text="Seconds a reviewer has to decide an escalation (then it moves to the expert queue, and after "
        "another such wait the safe default applies), unless its escalation policy sets its own deadline.",
    )
    adaptive_timeouts = models.BooleanField(default=True, help_text="p95 × 1.5 clamped 10–120 s once ≥ 5 samples")
    # The seed's step (phase) timeouts: they bound every call inside the phase, LLM calls included. A critical
    # phase that times out fails the run; an optional one is skipped (the agent gets None) and the run goes on.
    planning_timeout = models.FloatField(default=15.0, validators=[MinValueValidator(0.1)], help_text="seconds")
    planning_critical = models.BooleanField(default=True, help_text="A timeout fails the run (else: skipped).")
    tool_search_timeout = models.FloatField(default=10.0, validators=[MinValueValidator(0.1)], help_text="seconds")
    tool_search_critical = models.BooleanField(default=False, help_text="A timeout fails the run (else: skipped).")
    tool_execution_timeout = models.FloatField(default=45.0, validators=[MinValueValidator(0.1)], help_text="seconds")
    tool_execution_critical = models.BooleanField(default=False, help_text="A timeout fails the run (else: skipped).")
    response_generation_timeout = models.FloatField(
        default=20.0, validators=[MinValueValidator(0.1)], help_text="seconds"
    )
    response_generation_critical = models.BooleanField(
        default=True, help_text="A timeout fails the run (else: skipped)."
    )
    breaker_failure_threshold = models.PositiveSmallIntegerField(default=5, validators=[MinValueValidator(1)])
    breaker_recovery_seconds = models.FloatField(default=60.0, validators=[MinValueValidator(0.1)])
    breaker_half_open_probes = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1)])
    retry_budget = models.PositiveSmallIntegerField(default=6, help_text="Retries per call across the whole chain")
    # Result validation and the caches (the seed's defaults, DESIGN.md §11): keep these together.
    min_answer_chars = models.PositiveSmallIntegerField(
        default=10,
        help_text=gettext_lazy("An answer shorter than this goes to the next handler (the seed: 10; 0: any length)."),
    )
    rejected_phrases = models.TextField(
        blank=True,
        default="I don't know\nerror",
        help_text=gettext_lazy(
            "One phrase per line, plain text matched anywhere in the answer, ignoring case: an answer "
            "containing one goes to the next handler. Blank: none. A model route can replace this list and the "
            "minimum length with its own ('own answer checks')."
        ),
    )
    refusal_patterns = models.TextField(
        blank=True,
        validators=[validate_regex_lines],
        help_text=gettext_lazy("One regex per line; blank = built-in patterns"),
    )
    llm_cache_ttl = models.PositiveIntegerField(
        default=3600,
        validators=[MinValueValidator(1)],
        help_text=gettext_lazy("llm_responses cache: seconds an answer is kept."),
    )
    llm_cache_size = models.PositiveIntegerField(
        default=1000,
        validators=[MinValueValidator(1)],
        help_text=gettext_lazy("llm_responses cache: entries kept per process."),
    )
    tool_cache_ttl = models.PositiveIntegerField(
        default=1800,
        validators=[MinValueValidator(1)],
        help_text=gettext_lazy("tool_results cache: seconds a result is kept."),
    )
    tool_cache_size = models.PositiveIntegerField(
        default=500,
        validators=[MinValueValidator(1)],
        help_text=gettext_lazy("tool_results cache: entries kept per process."),
    )
    profile_cache_ttl = models.PositiveIntegerField(
        default=86400,
        validators=[MinValueValidator(1)],
        help_text=gettext_lazy("user_profiles cache: seconds a profile is kept."),
    )
    profile_cache_size = models.PositiveIntegerField(
        default=100,
        validators=[MinValueValidator(1)],
        help_text=gettext_lazy("user_profiles cache: entries kept per process."),
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

    def step_timeouts(self) -> tuple[dict[str, float], dict[str, bool]]:
        """The phases' timeouts and critical flags, by phase name."""
        seconds = {phase: getattr(self, f"{phase}_timeout") for phase in STEP_PHASES}
        return seconds, {phase: getattr(self, f"{phase}_critical") for phase in STEP_PHASES}
