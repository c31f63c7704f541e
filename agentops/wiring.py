"""Assemble the runtime's guard pipeline from Django-side parts, once per process, and install the ports
that runs use to reach the rooms above them.

`guard_deps()` gives the GuardDeps every caller (Celery tasks, the gateway, the API) passes to
`agentops.runtime.guard.guarded_llm`: config from admin-editable models, providers from the Provider
table, breakers/cache/adaptive timeouts on Redis, breaker changes announced live on the `ops` group.
`install()` (called by AgentopsConfig.ready() in every process) hands runs their ports
(agentops/runs/ports.py): these guard dependencies, review's escalator and the budgets ledger.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import anthropic
import httpx2
import openai
from django.conf import settings
from openai._constants import DEFAULT_CONNECTION_LIMITS

from agentops.config.models import Provider as ProviderRow
from agentops.config.source import ENV_UPSTREAM, config_source
from agentops.lib import live, netguard
from agentops.lib.redis import runtime_redis
from agentops.runs import ports
from agentops.runtime.breaker import BreakerRegistry, BreakerState
from agentops.runtime.cache import CACHE_SPECS, LLM_RESPONSES, TOOL_RESULTS, USER_PROFILES, TwoLevelCache
from agentops.runtime.errors import FallbackExhausted
from agentops.runtime.guard import GuardDeps, guarded_llm, make_breaker_registry
from agentops.runtime.providers.anthropic_native import AnthropicProvider
from agentops.runtime.providers.base import LLMRequest, Provider
from agentops.runtime.providers.openai_compat import OpenAICompatProvider
from agentops.runtime.providers.simulated import SimulatedProvider
from agentops.runtime.semantic_cache import SemanticCache
from agentops.runtime.timeouts import AdaptiveTimeouts
from budgets.actions.call_counts import call_counts
from budgets.actions.directory import directory_changed
from budgets.actions.ledger import step_cost
from budgets.gate import BUDGET_GATE, USAGE_SINK
from budgets.models import UsageRecord
from budgets.presenters import call_rows
from review.escalator import ReviewEscalations


def guarded_openai_client(base_url: str, api_key: str):
    """The openai SDK client every provider uses: its transport checks each request (redirect hops too) after
    DNS resolution and connects to the checked address (agentops/lib/netguard.py), so a base URL can never reach
    loopback, link-local or private addresses the operator did not allow-list."""
    transport = netguard.guarded_transport(httpx2.HTTPTransport)(limits=DEFAULT_CONNECTION_LIMITS)
    return openai.OpenAI(
        base_url=base_url,
        api_key=api_key or "unset",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(transport=transport),
    )


def guarded_anthropic_client(base_url: str | None, api_key: str):
    """The anthropic SDK client of an Anthropic provider, behind the same address guard as the openai one."""
    transport = netguard.guarded_transport(httpx2.HTTPTransport)(limits=anthropic.DEFAULT_CONNECTION_LIMITS)
    return anthropic.Anthropic(
        base_url=base_url or None,
        api_key=api_key or "unset",
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(transport=transport),
    )


def build_provider(row) -> Provider:
    """A runtime provider from a Provider row."""
    if row.kind == ProviderRow.Kind.ANTHROPIC:
        return AnthropicProvider(
            row.name, row.base_url or None, row.api_key, client=guarded_anthropic_client(row.base_url, row.api_key)
        )
    if row.kind == ProviderRow.Kind.OPENAI:
        api_key = row.api_key or "unused"
        return OpenAICompatProvider(
            row.name,
            row.base_url,
            api_key,
            client=guarded_openai_client(row.base_url, api_key),
            speaks_responses=row.speaks_responses,
        )
    rates = {"ServiceUnavailable": row.fault_rate} if row.fault_rate else None
    return SimulatedProvider(row.name, latency=row.latency_ms / 1000, fault_rates=rates, seed=None)


_env_upstream: Provider | None = None


def env_upstream() -> Provider | None:
    """The default upstream that OPENAI_BASE_URL / OPENAI_API_KEY describe (one client per process)."""
    global _env_upstream
    if not settings.GATEWAY_UPSTREAM_URL:
        return None
    if _env_upstream is None:
        api_key = settings.GATEWAY_UPSTREAM_KEY or "unused"
        _env_upstream = OpenAICompatProvider(
            ENV_UPSTREAM,
            settings.GATEWAY_UPSTREAM_URL,
            api_key,
            client=guarded_openai_client(settings.GATEWAY_UPSTREAM_URL, api_key),
        )
    return _env_upstream


class ProviderDirectory(Mapping):
    """Providers by name, rebuilt from the database whenever the runtime config version changes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._version: object = object()
        self._providers: dict[str, Provider] = {}

    def _current(self) -> dict[str, Provider]:
        version = config_source().get().version
        if version != self._version:
            with self._lock:
                if version != self._version:
                    providers = {row.name: build_provider(row) for row in ProviderRow.objects.filter(enabled=True)}
                    upstream = env_upstream()
                    if upstream is not None:
                        providers[upstream.name] = upstream
                    self._providers = providers
                    self._version = version
        return self._providers

    def __getitem__(self, name: str) -> Provider:
        return self._current()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


def announce_breaker_change(name: str, old: BreakerState, new: BreakerState) -> None:
    """Breaker state lives in Redis, not in a transaction: tell the ops page at once."""
    live.send_now("ops", "breaker.changed", {"breaker": name, "from": str(old), "to": str(new)})


_deps: GuardDeps | None = None
_pid: int | None = None
_lock = threading.Lock()


def guard_deps() -> GuardDeps:
    global _deps, _pid
    with _lock:
        if _deps is None or _pid != os.getpid():
            redis = runtime_redis()
            source = config_source()
            _deps = GuardDeps(
                config=source,
                budget=BUDGET_GATE,
                usage=USAGE_SINK,
                providers=ProviderDirectory(),
                breakers=make_breaker_registry(redis, source, on_state_change=announce_breaker_change),
                cache=_cache(redis, LLM_RESPONSES),
                adaptive=AdaptiveTimeouts(redis, source.get().adaptive),
                calls=call_counts(),
                semantic=SemanticCache(redis),
            )
            _pid = os.getpid()
        return _deps


def breaker_registry() -> BreakerRegistry:
    return guard_deps().breakers


def probe_route(operation: str, prompt: str) -> dict:
    """Send one prompt through the whole guard pipeline (what an operator's "probe" button does).

    Returns the result's dict, or {"error": ..., "hops": [...]} when every handler failed."""
    request = LLMRequest(messages=[{"role": "user", "content": prompt}], operation=operation, max_tokens=200)
    try:
        return {"ok": True, **guarded_llm(request, deps=guard_deps()).to_dict()}
    except FallbackExhausted as exc:
        return {"ok": False, "error": str(exc), "hops": [hop.to_dict() for hop in exc.hops]}


def _cache(redis: Any, name: str) -> TwoLevelCache:
    """The cache ``name`` with its TTL and size read live from the runtime settings (admin-editable)."""
    source = config_source()
    return TwoLevelCache(
        redis, CACHE_SPECS[name], spec_source=lambda: source.get().caches.get(name) or CACHE_SPECS[name]
    )


_agent_caches: tuple[int, dict[str, TwoLevelCache]] | None = None


def agent_caches() -> dict[str, TwoLevelCache]:
    """The per-process caches agents use: ``tool_results`` (cacheable tools, the seed's 30 min / 500) and
    ``user_profiles`` (``ctx.cache("user_profiles", key, loader)``, 24 h / 100)."""
    global _agent_caches
    with _lock:
        if _agent_caches is None or _agent_caches[0] != os.getpid():
            redis = runtime_redis()
            _agent_caches = (os.getpid(), {name: _cache(redis, name) for name in (TOOL_RESULTS, USER_PROFILES)})
        return _agent_caches[1]


def tool_cache() -> TwoLevelCache:
    """The per-process cache for cacheable tools (``tool_results``)."""
    return agent_caches()[TOOL_RESULTS]


def run_calls(run_pk: int) -> list[dict[str, Any]]:
    """A run's priced calls (its ledger rows, at most 500), as the run page lists them."""
    return call_rows(UsageRecord.objects.filter(run_id=run_pk).select_related("price").order_by("id")[:500])


# budgets.actions.ledger.step_cost as SQL (the journal's one statement per step prices the step with it): the
# ledger rows of one run step, by the partial index on run_id.
STEP_COST_SQL = "SELECT COALESCE(SUM(cost_usd), 0) FROM budgets_usagerecord WHERE run_id = %(run)s AND step = %(seq)s"


def install() -> None:
    """Give runs their ports in this process (AgentopsConfig.ready() calls this in every process)."""
    ports.install(
        ports.RunPorts(
            guard_deps=guard_deps,
            tool_cache=tool_cache,
            agent_caches=agent_caches,
            escalations=ReviewEscalations(),
            step_cost=step_cost,
            step_cost_sql=STEP_COST_SQL,
            agents_changed=directory_changed,
            run_calls=run_calls,
        )
    )
