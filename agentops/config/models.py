"""Runtime configuration an admin changes live: providers, model routes, retry policies, fallback rules and
the runtime settings. Every write goes through agentops/config/actions.py, which bumps a version key in Redis
after commit so that every worker reloads the runtime config within about a second, without a restart.

The tables keep the ``agentops`` app label (agentops/runs/models.py registers these models under it)."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.functional import Promise
from django.utils.text import format_lazy
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from agentops.lib import netguard
from agentops.runtime.errors import ErrorClass
from agentops.runtime.timeouts import STEP_DEFAULTS

STEP_PHASES = tuple(STEP_DEFAULTS)  # each has a <phase>_timeout and a <phase>_critical field below
SECONDS = gettext_lazy("seconds")
FAILS_THE_RUN = gettext_lazy("A timeout fails the run (else: skipped).")
# The error taxonomy's words in the admin's choice of error class (the same words the run pages use).
KIND_LABELS = {"system": gettext_lazy("system failure"), "business": gettext_lazy("business failure")}
CATEGORY_LABELS = {
    "network": gettext_lazy("network"),
    "resource": gettext_lazy("resource"),
    "dependency": gettext_lazy("dependency"),
    "input": gettext_lazy("input"),
    "logic": gettext_lazy("logic"),
    "data": gettext_lazy("data"),
}


def error_class_label(error_class: ErrorClass) -> Promise:
    """An error class as the admin lists it, "RateLimited (system failure: resource)", in the reader's language
    (the class name stays as it is)."""
    category = error_class.category
    return format_lazy("{} ({}: {})", error_class.value, KIND_LABELS[category.kind], CATEGORY_LABELS[category.value])


def validate_regex(value: str) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValidationError(_("Not a valid regular expression: %(error)s") % {"error": exc}) from None


def validate_regex_lines(value: str) -> None:
    for number, line in enumerate(value.splitlines(), start=1):
        if line.strip():
            try:
                re.compile(line.strip())
            except re.error as exc:
                raise ValidationError(
                    _("Line %(number)s is not a valid regular expression: %(error)s") % {"number": number, "error": exc}
                ) from None


def validate_threshold(value: float) -> None:
    """A cosine similarity threshold: above 0, at most 1."""
    if not 0 < value <= 1:
        raise ValidationError(_("The threshold must be above 0 and at most 1."))


class Provider(models.Model):
    """An upstream that answers chat completions."""

    class Kind(models.TextChoices):
        OPENAI = "openai", gettext_lazy("OpenAI-compatible HTTP API")
        ANTHROPIC = "anthropic", gettext_lazy("Anthropic Messages API")
        SIMULATED = "simulated", gettext_lazy("Simulated (offline, deterministic)")

    name = models.SlugField(max_length=50, unique=True, verbose_name=gettext_lazy("name"))
    kind = models.CharField(
        max_length=20, choices=Kind.choices, default=Kind.SIMULATED, verbose_name=gettext_lazy("kind")
    )
    base_url = models.URLField(
        blank=True,
        help_text=gettext_lazy(
            "For OpenAI-compatible providers, e.g. https://api.openai.com/v1; for Anthropic, the API's root "
            "(blank: https://api.anthropic.com)."
        ),
        verbose_name=gettext_lazy("base URL"),
    )
    api_key = models.CharField(
        max_length=300,
        blank=True,
        help_text=gettext_lazy("Stored as given; leave blank for none."),
        verbose_name=gettext_lazy("API key"),
    )
    latency_ms = models.PositiveIntegerField(
        default=0,
        help_text=gettext_lazy("Simulated providers: added latency."),
        verbose_name=gettext_lazy("added latency (ms)"),
    )
    fault_rate = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text=gettext_lazy("Simulated providers: share of calls that fail with a transient error."),
        verbose_name=gettext_lazy("fault rate"),
    )
    served_models = models.CharField(
        max_length=1000,
        blank=True,
        help_text=gettext_lazy(
            "Models this provider serves, comma-separated: the gateway sends a request naming one here "
            "and lists them at /v1/models."
        ),
        verbose_name=gettext_lazy("served models"),
    )
    speaks_responses = models.BooleanField(
        default=False,
        help_text=gettext_lazy(
            "OpenAI-compatible providers: it answers OpenAI's Responses API (POST /responses) itself, so the "
            "gateway's /v1/responses is passed to it natively instead of being translated to chat completions."
        ),
        verbose_name=gettext_lazy("speaks the Responses API"),
    )
    enabled = models.BooleanField(default=True, verbose_name=gettext_lazy("enabled"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=gettext_lazy("updated at"))

    class Meta:
        ordering = ["name"]
        verbose_name = gettext_lazy("provider")
        verbose_name_plural = gettext_lazy("providers")

    def __str__(self) -> str:
        return self.name

    def model_names(self) -> list[str]:
        return [name.strip() for name in self.served_models.split(",") if name.strip()]

    def clean(self) -> None:
        if self.kind == self.Kind.OPENAI and not self.base_url:
            raise ValidationError({"base_url": _("An OpenAI-compatible provider needs a base URL.")})
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

    operation = models.SlugField(
        max_length=50,
        unique=True,
        help_text=gettext_lazy("e.g. planning, classify, response"),
        verbose_name=gettext_lazy("operation"),
    )
    primary_provider = models.ForeignKey(
        Provider, on_delete=models.PROTECT, related_name="+", verbose_name=gettext_lazy("primary provider")
    )
    primary_model = models.CharField(max_length=100, verbose_name=gettext_lazy("primary model"))
    backup_provider = models.ForeignKey(
        Provider,
        on_delete=models.PROTECT,
        related_name="+",
        null=True,
        blank=True,
        verbose_name=gettext_lazy("backup provider"),
    )
    backup_model = models.CharField(max_length=100, blank=True, verbose_name=gettext_lazy("backup model"))
    use_rules = models.BooleanField(
        default=True,
        help_text=gettext_lazy("Try the rule engine after the models."),
        verbose_name=gettext_lazy("use the rule engine"),
    )
    use_human = models.BooleanField(
        default=True,
        help_text=gettext_lazy("Hand off to a human when everything else failed."),
        verbose_name=gettext_lazy("hand off to a human"),
    )
    # Result validation for this route's answers (agentops.runtime.validation): off = the runtime settings'.
    own_answer_checks = models.BooleanField(
        default=False,
        help_text=gettext_lazy(
            "Check this route's answers with the minimum length and rejected phrases below instead of the "
            "runtime settings' (e.g. a coding route whose answers legitimately contain 'error': clear the phrases)."
        ),
        verbose_name=gettext_lazy("own answer checks"),
    )
    min_answer_chars = models.PositiveSmallIntegerField(
        default=10,
        help_text=gettext_lazy("With own answer checks: a shorter answer goes to the next handler (0: any length)."),
        verbose_name=gettext_lazy("minimum answer length"),
    )
    rejected_phrases = models.TextField(
        blank=True,
        default="I don't know\nerror",
        help_text=gettext_lazy(
            "With own answer checks: one phrase per line, plain text matched anywhere in the answer, ignoring "
            "case; an answer containing one goes to the next handler. Blank: no phrase is rejected."
        ),
        verbose_name=gettext_lazy("rejected phrases"),
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
        verbose_name = gettext_lazy("model route")
        verbose_name_plural = gettext_lazy("model routes")

    def __str__(self) -> str:
        return f"{self.operation} → {self.primary_provider}:{self.primary_model}"

    def clean(self) -> None:
        if bool(self.backup_provider_id) != bool(self.backup_model):
            raise ValidationError(_("Give both a backup provider and a backup model, or neither."))


class RetryPolicy(models.Model):
    """Retries for one error class (the seed's defaults are created by a migration; one row per class)."""

    error_class = models.CharField(
        max_length=40,
        unique=True,
        choices=[(c.value, error_class_label(c)) for c in ErrorClass],
        verbose_name=gettext_lazy("error class"),
    )
    max_retries = models.PositiveSmallIntegerField(
        validators=[MaxValueValidator(20)],
        help_text=gettext_lazy(
            "Retries after the first try. Permanent classes (AuthenticationError, BadRequest, RejectedAnswer, "
            "LogicError, BudgetExceeded) are never retried: the call moves on to the next handler."
        ),
        verbose_name=gettext_lazy("max retries"),
    )
    base_delay = models.FloatField(
        validators=[MinValueValidator(0.0), MaxValueValidator(600.0)],
        help_text=SECONDS,
        verbose_name=gettext_lazy("base delay"),
    )
    max_delay = models.FloatField(
        validators=[MinValueValidator(0.0), MaxValueValidator(3600.0)],
        help_text=SECONDS,
        verbose_name=gettext_lazy("max delay"),
    )
    multiplier = models.FloatField(
        default=2.0,
        validators=[MinValueValidator(1.0), MaxValueValidator(10.0)],
        verbose_name=gettext_lazy("multiplier"),
    )
    jitter = models.BooleanField(default=True, verbose_name=gettext_lazy("jitter"))

    class Meta:
        ordering = ["error_class"]
        verbose_name = gettext_lazy("retry policy")
        verbose_name_plural = gettext_lazy("retry policies")

    def __str__(self) -> str:
        return f"{self.error_class}: {self.max_retries} × {self.base_delay}s"


class FallbackRule(models.Model):
    """Rule engine: the first enabled rule whose pattern matches the last user message answers."""

    name = models.SlugField(max_length=50, unique=True, verbose_name=gettext_lazy("name"))
    pattern = models.CharField(
        max_length=500,
        validators=[validate_regex],
        help_text=gettext_lazy("Python regex, case-insensitive"),
        verbose_name=gettext_lazy("pattern"),
    )
    answer = models.TextField(
        help_text=gettext_lazy("May use {0}, {1} or {name} from the pattern's groups."),
        verbose_name=gettext_lazy("answer"),
    )
    operations = models.CharField(
        max_length=200,
        blank=True,
        help_text=gettext_lazy("Comma-separated; blank = every operation"),
        verbose_name=gettext_lazy("operations"),
    )
    position = models.PositiveSmallIntegerField(default=100, verbose_name=gettext_lazy("position"))
    enabled = models.BooleanField(default=True, verbose_name=gettext_lazy("enabled"))

    class Meta:
        ordering = ["position", "name"]
        verbose_name = gettext_lazy("fallback rule")
        verbose_name_plural = gettext_lazy("fallback rules")

    def __str__(self) -> str:
        return self.name


class RuntimeSettings(models.Model):
    """The one row of scalar tunables (timeouts, breaker, retry budget, validation, cache, default chain)."""

    llm_timeout = models.FloatField(
        default=30.0, validators=[MinValueValidator(0.1)], verbose_name=gettext_lazy("LLM call timeout (s)")
    )
    tool_timeout = models.FloatField(
        default=60.0, validators=[MinValueValidator(0.1)], verbose_name=gettext_lazy("tool call timeout (s)")
    )
    request_timeout = models.FloatField(
        default=300.0, validators=[MinValueValidator(1.0)], verbose_name=gettext_lazy("request timeout (s)")
    )
    human_timeout = models.FloatField(
        default=600.0,
        validators=[MinValueValidator(1.0)],
        help_text=gettext_lazy(
            "Seconds a reviewer has to decide an escalation (then it moves to the expert queue, and after "
            "another such wait the safe default applies), unless its escalation policy sets its own deadline."
        ),
        verbose_name=gettext_lazy("human timeout (s)"),
    )
    adaptive_timeouts = models.BooleanField(
        default=True,
        help_text=gettext_lazy("p95 × 1.5 clamped 10–120 s once ≥ 5 samples"),
        verbose_name=gettext_lazy("adaptive timeouts"),
    )
    # The seed's step (phase) timeouts: they bound every call inside the phase, LLM calls included. A critical
    # phase that times out fails the run; an optional one is skipped (the agent gets None) and the run goes on.
    planning_timeout = models.FloatField(
        default=15.0,
        validators=[MinValueValidator(0.1)],
        help_text=SECONDS,
        verbose_name=gettext_lazy("planning timeout"),
    )
    planning_critical = models.BooleanField(
        default=True, help_text=FAILS_THE_RUN, verbose_name=gettext_lazy("planning is critical")
    )
    tool_search_timeout = models.FloatField(
        default=10.0,
        validators=[MinValueValidator(0.1)],
        help_text=SECONDS,
        verbose_name=gettext_lazy("tool search timeout"),
    )
    tool_search_critical = models.BooleanField(
        default=False, help_text=FAILS_THE_RUN, verbose_name=gettext_lazy("tool search is critical")
    )
    tool_execution_timeout = models.FloatField(
        default=45.0,
        validators=[MinValueValidator(0.1)],
        help_text=SECONDS,
        verbose_name=gettext_lazy("tool execution timeout"),
    )
    tool_execution_critical = models.BooleanField(
        default=False, help_text=FAILS_THE_RUN, verbose_name=gettext_lazy("tool execution is critical")
    )
    response_generation_timeout = models.FloatField(
        default=20.0,
        validators=[MinValueValidator(0.1)],
        help_text=SECONDS,
        verbose_name=gettext_lazy("response generation timeout"),
    )
    response_generation_critical = models.BooleanField(
        default=True, help_text=FAILS_THE_RUN, verbose_name=gettext_lazy("response generation is critical")
    )
    breaker_failure_threshold = models.PositiveSmallIntegerField(
        default=5, validators=[MinValueValidator(1)], verbose_name=gettext_lazy("breaker failure threshold")
    )
    breaker_recovery_seconds = models.FloatField(
        default=60.0, validators=[MinValueValidator(0.1)], verbose_name=gettext_lazy("breaker recovery (s)")
    )
    breaker_half_open_probes = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1)], verbose_name=gettext_lazy("breaker half-open probes")
    )
    retry_budget = models.PositiveSmallIntegerField(
        default=6,
        help_text=gettext_lazy("Retries per call across the whole chain"),
        verbose_name=gettext_lazy("retry budget"),
    )
    # Result validation and the caches (the seed's defaults, DESIGN.md §11): keep these together.
    min_answer_chars = models.PositiveSmallIntegerField(
        default=10,
        help_text=gettext_lazy("An answer shorter than this goes to the next handler (the seed: 10; 0: any length)."),
        verbose_name=gettext_lazy("minimum answer length"),
    )
    rejected_phrases = models.TextField(
        blank=True,
        default="I don't know\nerror",
        help_text=gettext_lazy(
            "One phrase per line, plain text matched anywhere in the answer, ignoring case: an answer "
            "containing one goes to the next handler. Blank: none. A model route can replace this list and the "
            "minimum length with its own ('own answer checks')."
        ),
        verbose_name=gettext_lazy("rejected phrases"),
    )
    refusal_patterns = models.TextField(
        blank=True,
        validators=[validate_regex_lines],
        help_text=gettext_lazy("One regex per line; blank = built-in patterns"),
        verbose_name=gettext_lazy("refusal patterns"),
    )
    llm_cache_ttl = models.PositiveIntegerField(
        default=3600,
        validators=[MinValueValidator(1)],
        help_text=gettext_lazy("llm_responses cache: seconds an answer is kept."),
        verbose_name=gettext_lazy("LLM cache TTL"),
    )
    llm_cache_size = models.PositiveIntegerField(
        default=1000,
        validators=[MinValueValidator(1)],
        help_text=gettext_lazy("llm_responses cache: entries kept per process."),
        verbose_name=gettext_lazy("LLM cache size"),
    )
    tool_cache_ttl = models.PositiveIntegerField(
        default=1800,
        validators=[MinValueValidator(1)],
        help_text=gettext_lazy("tool_results cache: seconds a result is kept."),
        verbose_name=gettext_lazy("tool cache TTL"),
    )
    tool_cache_size = models.PositiveIntegerField(
        default=500,
        validators=[MinValueValidator(1)],
        help_text=gettext_lazy("tool_results cache: entries kept per process."),
        verbose_name=gettext_lazy("tool cache size"),
    )
    profile_cache_ttl = models.PositiveIntegerField(
        default=86400,
        validators=[MinValueValidator(1)],
        help_text=gettext_lazy("user_profiles cache: seconds a profile is kept."),
        verbose_name=gettext_lazy("profile cache TTL"),
    )
    profile_cache_size = models.PositiveIntegerField(
        default=100,
        validators=[MinValueValidator(1)],
        help_text=gettext_lazy("user_profiles cache: entries kept per process."),
        verbose_name=gettext_lazy("profile cache size"),
    )
    cacheable_operations = models.CharField(
        max_length=300, default="classify", blank=True, verbose_name=gettext_lazy("cacheable operations")
    )
    default_provider = models.ForeignKey(
        Provider,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=gettext_lazy("default provider"),
    )
    default_model = models.CharField(max_length=100, blank=True, verbose_name=gettext_lazy("default model"))
    backup_provider = models.ForeignKey(
        Provider,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=gettext_lazy("backup provider"),
    )
    backup_model = models.CharField(max_length=100, blank=True, verbose_name=gettext_lazy("backup model"))

    class GatewayCache(models.TextChoices):
        DETERMINISTIC = "deterministic", gettext_lazy("Only requests with temperature 0 and no tools")
        ALWAYS = "always", gettext_lazy("Every non-streaming request")
        OFF = "off", gettext_lazy("Never")

    gateway_cache = models.CharField(
        max_length=15,
        choices=GatewayCache.choices,
        default=GatewayCache.DETERMINISTIC,
        help_text=gettext_lazy("Which /v1/chat/completions requests the gateway answers from the cache."),
        verbose_name=gettext_lazy("gateway cache"),
    )
    updated_at = models.DateTimeField(auto_now=True, verbose_name=gettext_lazy("updated at"))

    class Meta:
        verbose_name = verbose_name_plural = gettext_lazy("runtime settings")

    def __str__(self) -> str:
        return str(gettext_lazy("Runtime settings"))

    def step_timeouts(self) -> tuple[dict[str, float], dict[str, bool]]:
        """The phases' timeouts and critical flags, by phase name."""
        seconds = {phase: getattr(self, f"{phase}_timeout") for phase in STEP_PHASES}
        return seconds, {phase: getattr(self, f"{phase}_critical") for phase in STEP_PHASES}
