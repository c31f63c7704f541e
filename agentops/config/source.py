"""The Django side of the runtime's ConfigSource: admin-editable models → one RuntimeConfig.

Workers cache the config in memory and probe a version key in Redis at most once a second; every
change made through agentops.config.actions bumps that key after commit, so a running worker uses a changed
retry policy, timeout, breaker threshold, route or rule within about a second, without a restart.
"""

from __future__ import annotations

import threading

from django.conf import settings

from agentops.config.models import FallbackRule, ModelRoute, Provider, RetryPolicy, RuntimeSettings
from agentops.lib.redis import runtime_redis
from agentops.runtime.breaker import BreakerSettings
from agentops.runtime.cache import LLM_RESPONSES, TOOL_RESULTS, USER_PROFILES, CacheSpec
from agentops.runtime.config import DEFAULT_CONFIG, CachedConfigSource, RuntimeConfig, TimeoutSettings
from agentops.runtime.errors import ErrorClass
from agentops.runtime.providers.rules import Rule
from agentops.runtime.retry import DEFAULT_POLICIES, RetrySettings
from agentops.runtime.retry import RetryPolicy as RuntimeRetryPolicy
from agentops.runtime.routing import Route, SemanticSettings, Target
from agentops.runtime.validation import RouteValidation, ValidationSettings

VERSION_KEY = "agentops:config:version"
ENV_UPSTREAM = "openai-env"  # the provider OPENAI_BASE_URL / OPENAI_API_KEY describe (not a database row)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _lines(value: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in value.splitlines() if line.strip())


def load_runtime_config() -> RuntimeConfig:
    """Read every runtime setting from the database (a handful of small queries)."""
    row = RuntimeSettings.objects.select_related("default_provider", "backup_provider").first()
    if row is None:
        return DEFAULT_CONFIG
    policies = {
        ErrorClass(p.error_class): RuntimeRetryPolicy(p.max_retries, p.base_delay, p.max_delay, p.multiplier, p.jitter)
        for p in RetryPolicy.objects.all()
    }
    route_rows = list(ModelRoute.objects.select_related("primary_provider", "backup_provider"))
    routes = tuple(
        Route(
            r.operation,
            tuple(
                [Target(r.primary_provider.name, r.primary_model)]
                + ([Target(r.backup_provider.name, r.backup_model)] if r.backup_provider_id else [])
            ),
            use_rules=r.use_rules,
            use_human=r.use_human,
            semantic=SemanticSettings(
                r.operation, r.semantic_threshold, float(r.semantic_ttl), r.semantic_embeddings_model.strip()
            )
            if r.semantic_cache
            else None,
        )
        for r in route_rows
    )
    default_chain = DEFAULT_CONFIG.default_chain
    if row.default_provider_id and row.default_model:
        default_chain = (Target(row.default_provider.name, row.default_model),)
        if row.backup_provider_id and row.backup_model:
            default_chain += (Target(row.backup_provider.name, row.backup_model),)
    refusals = tuple(line.strip() for line in row.refusal_patterns.splitlines() if line.strip())
    step_seconds, step_critical = row.step_timeouts()
    return RuntimeConfig(
        # a class whose row was deleted keeps its default policy (not the generic one)
        retry=RetrySettings(by_class={**DEFAULT_POLICIES, **policies}, budget=row.retry_budget),
        timeouts=TimeoutSettings(
            llm=row.llm_timeout,
            tool=row.tool_timeout,
            request=row.request_timeout,
            human=row.human_timeout,
            steps=step_seconds,
            critical=step_critical,
            adaptive=row.adaptive_timeouts,
        ),
        breaker=BreakerSettings(
            failure_threshold=row.breaker_failure_threshold,
            recovery_timeout=row.breaker_recovery_seconds,
            half_open_max_probes=row.breaker_half_open_probes,
        ),
        routes=routes,
        default_chain=default_chain,
        rules=tuple(
            Rule(rule.pattern, rule.answer, name=rule.name, operations=_csv(rule.operations))
            for rule in FallbackRule.objects.filter(enabled=True)
        ),
        validation=ValidationSettings(
            min_chars=row.min_answer_chars,
            rejected_phrases=_lines(row.rejected_phrases),
            refusal_patterns=refusals or ValidationSettings().refusal_patterns,
            by_operation={
                r.operation: RouteValidation(r.min_answer_chars, _lines(r.rejected_phrases))
                for r in route_rows
                if r.own_answer_checks
            },
        ),
        cacheable_operations=frozenset(_csv(row.cacheable_operations)),
        caches={
            LLM_RESPONSES: CacheSpec(LLM_RESPONSES, row.llm_cache_ttl, row.llm_cache_size),
            TOOL_RESULTS: CacheSpec(TOOL_RESULTS, row.tool_cache_ttl, row.tool_cache_size),
            USER_PROFILES: CacheSpec(USER_PROFILES, row.profile_cache_ttl, row.profile_cache_size),
        },
        catalog={
            model: provider.name
            for provider in Provider.objects.filter(enabled=True).exclude(served_models="").order_by("-name")
            for model in provider.model_names()
        },
        default_upstream=ENV_UPSTREAM if settings.GATEWAY_UPSTREAM_URL else None,
        gateway_cache=row.gateway_cache,
        version=_version_label(row.updated_at.isoformat()),
    )


def _version_label(suffix: str) -> str:
    """The Redis counter every save bumps (so provider, rule and policy edits change it too)."""
    try:
        counter = current_version()
    except Exception:  # Redis down: the TTL reload still happens
        counter = None
    return f"{(counter or b'0').decode()}:{suffix}"


def current_version() -> bytes | None:
    return runtime_redis().get(VERSION_KEY)


def bump_version() -> None:
    """Tell every process to reload (called after commit by agentops.config.actions)."""
    runtime_redis().incr(VERSION_KEY)


_source: CachedConfigSource | None = None
_lock = threading.Lock()


def config_source() -> CachedConfigSource:
    """The process-wide ConfigSource (30 s TTL, version probed at most every RUNTIME_CONFIG_CHECK_SECONDS)."""
    global _source
    with _lock:
        if _source is None:
            _source = CachedConfigSource(
                load_runtime_config,
                ttl=30.0,
                version=current_version,
                check_interval=settings.RUNTIME_CONFIG_CHECK_SECONDS,
            )
        return _source
