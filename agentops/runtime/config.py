"""Everything an admin may change about the guard pipeline, as one immutable ``RuntimeConfig``.

The runtime never reads settings itself: it asks a ``ConfigSource`` for the current ``RuntimeConfig`` on
every guarded call. ``StaticConfigSource`` serves a fixed one (tests, scripts); the Django side implements
the protocol from admin-editable models with a short cache and invalidation, so a changed retry policy,
timeout, breaker threshold, route, rule or validation pattern reaches every running worker without a
restart. ``get()`` is on the hot path: it must be a cheap in-memory read almost always.

A config is rebuilt, never mutated; derived objects (router, rule engine) are built once per config.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, runtime_checkable

from agentops.runtime.breaker import BreakerSettings
from agentops.runtime.cache import CACHE_SPECS, CacheSpec
from agentops.runtime.providers.rules import Rule, RuleEngine
from agentops.runtime.retry import RetrySettings
from agentops.runtime.routing import Route, Router, Target
from agentops.runtime.timeouts import LAYERED_DEFAULTS, STEP_CRITICAL, STEP_DEFAULTS, AdaptiveSettings
from agentops.runtime.validation import ValidationSettings

logger = logging.getLogger(__name__)

# The seed's model choice by task complexity; the Django settings may name others.
LARGE_MODEL = "gpt-4o"
SMALL_MODEL = "gpt-4o-mini"
DEFAULT_PROVIDER = "openai"


@dataclass(frozen=True)
class TimeoutSettings:
    """Layered timeouts (seconds) and the per-step ones (``steps``; ``critical``: which steps fail the run when
    they time out, the others are skipped); ``adaptive`` turns latency learning on or off. ``human``: how long
    an escalation waits for a reviewer when its escalation policy sets no deadline of its own."""

    llm: float = LAYERED_DEFAULTS["llm"]
    tool: float = LAYERED_DEFAULTS["tool"]
    request: float = LAYERED_DEFAULTS["request"]
    human: float = LAYERED_DEFAULTS["human"]
    steps: Mapping[str, float] = field(default_factory=lambda: dict(STEP_DEFAULTS))
    critical: Mapping[str, bool] = field(default_factory=lambda: dict(STEP_CRITICAL))
    adaptive: bool = True


def seed_routes(
    provider: str = DEFAULT_PROVIDER,
    *,
    large: str = LARGE_MODEL,
    small: str = SMALL_MODEL,
    backup_provider: str | None = None,
) -> tuple[tuple[Route, ...], tuple[Target, ...]]:
    """The seed's routes and default chain: planning → large (backup small), classify → small (backup
    large), anything else → small (backup large). ``backup_provider`` serves the backups if given."""
    backup = backup_provider or provider
    routes = (
        Route("planning", (Target(provider, large), Target(backup, small))),
        Route("classify", (Target(provider, small), Target(backup, large))),
    )
    return routes, (Target(provider, small), Target(backup, large))


_SEED_ROUTES, _SEED_DEFAULT_CHAIN = seed_routes()

SEED_RULES: tuple[Rule, ...] = (
    Rule(
        r"\b(?:reset|forgot|change)\b.{0,20}\bpassword\b",
        "To reset your password use 'Forgot password' on the sign-in page; the link is valid for 1 hour.",
        name="password_reset",
    ),
    Rule(r"^\s*(?:hi|hello|hey)\b[\s!.]*$", "Hello! How can I help you today?", name="greeting"),
)


@dataclass(frozen=True)
class RuntimeConfig:
    """One consistent view of every tunable of the guard pipeline."""

    retry: RetrySettings = field(default_factory=RetrySettings)
    timeouts: TimeoutSettings = field(default_factory=TimeoutSettings)
    adaptive: AdaptiveSettings = field(default_factory=AdaptiveSettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    # Per breaker ("provider:model") overrides of ``breaker``.
    breaker_overrides: Mapping[str, BreakerSettings] = field(default_factory=dict)
    routes: tuple[Route, ...] = _SEED_ROUTES
    default_chain: tuple[Target, ...] = _SEED_DEFAULT_CHAIN
    use_rules: bool = True
    use_human: bool = True
    rules: tuple[Rule, ...] = SEED_RULES
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    cacheable_operations: frozenset[str] = frozenset({"classify"})
    # TTL and size of each cache by name (llm_responses, tool_results, user_profiles): the seed's by default.
    caches: Mapping[str, CacheSpec] = field(default_factory=lambda: dict(CACHE_SPECS))
    # Output tokens reserved for a request that names no max_tokens. Kept under the seed's smallest
    # per-call limits (planning 1000) so a short call that names none is not refused as oversized.
    default_max_tokens: int = 512
    # Budget refused and no cheaper model: escalate (reason budget_exceeded) instead of failing.
    escalate_budget_exceeded: bool = False
    # Models the providers list as served (model → provider), beside the models the routes name.
    catalog: Mapping[str, str] = field(default_factory=dict)
    # The provider that answers a model nobody routes or lists (the gateway; OPENAI_BASE_URL), if any.
    default_upstream: str | None = None
    # Which gateway requests the cache answers: deterministic (temperature 0, no tools) | always | off.
    gateway_cache: str = "deterministic"
    version: str = "seed"

    def breaker_settings_for(self, name: str) -> BreakerSettings:
        return self.breaker_overrides.get(name, self.breaker)

    def replace(self, **changes) -> RuntimeConfig:
        """A copy with ``changes`` (derived objects are rebuilt for the copy)."""
        return dataclasses.replace(self, **changes)

    @cached_property
    def router(self) -> Router:
        return Router(
            self.routes, self.default_chain, use_rules=self.use_rules, use_human=self.use_human, catalog=self.catalog
        )

    @cached_property
    def rule_engine(self) -> RuleEngine:
        return RuleEngine(self.rules)


DEFAULT_CONFIG = RuntimeConfig()


@runtime_checkable
class ConfigSource(Protocol):
    """Where the guard reads its config; called once per guarded call, so keep it cheap."""

    def get(self) -> RuntimeConfig: ...


class StaticConfigSource:
    """A config held in memory; ``set()`` swaps it (what an admin change looks like to a worker)."""

    def __init__(self, config: RuntimeConfig = DEFAULT_CONFIG) -> None:
        self._config = config

    def get(self) -> RuntimeConfig:
        return self._config

    def set(self, config: RuntimeConfig) -> None:
        self._config = config


class CachedConfigSource:
    """A ``ConfigSource`` over a slow loader (e.g. the database), cheap on the hot path.

    ``get()`` serves the cached config; it reloads through ``load()`` when ``ttl`` seconds have passed, or
    sooner when ``version()`` — a cheap probe, e.g. a Redis ``GET`` of a key every admin save bumps — has
    changed (probed at most every ``check_interval`` seconds). ``invalidate()`` forces the next ``get()``
    to reload (same process). A failing loader or probe never breaks a call: the last good config (or
    ``fallback``) is served, the error logged, and the load is retried after ``check_interval``.
    """

    def __init__(
        self,
        load: Callable[[], RuntimeConfig],
        *,
        ttl: float = 30.0,
        version: Callable[[], object] | None = None,
        check_interval: float = 1.0,
        fallback: RuntimeConfig = DEFAULT_CONFIG,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._version = version
        self._check_interval = check_interval
        self._clock = clock
        self._config: RuntimeConfig | None = None
        self._fallback = fallback
        self._loaded_at = self._checked_at = float("-inf")
        self._seen_version: object = None
        self._lock = threading.Lock()

    def get(self) -> RuntimeConfig:
        now = self._clock()
        config = self._config
        if config is not None and now - self._loaded_at < self._ttl and now - self._checked_at < self._check_interval:
            return config
        with self._lock:
            return self._refresh(now)

    def invalidate(self) -> None:
        self._loaded_at = self._checked_at = float("-inf")

    def _refresh(self, now: float) -> RuntimeConfig:
        stale = self._config is None or now - self._loaded_at >= self._ttl
        if not stale and now - self._checked_at < self._check_interval:
            return self._config  # another thread refreshed meanwhile
        self._checked_at = now
        version = self._seen_version
        if self._version is not None:
            try:
                version = self._version()
            except Exception:
                logger.warning("config version probe failed; keeping the current config", exc_info=True)
            else:
                stale = stale or version != self._seen_version
        if stale:
            try:
                self._config = self._load()
            except Exception:
                logger.exception("loading the runtime config failed; serving the last good one")
            else:
                self._loaded_at = now
                self._seen_version = version
        return self._config if self._config is not None else self._fallback
