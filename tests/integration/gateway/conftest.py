"""Fixtures for the OpenAI-compatible gateway tests: a uvicorn process whose default upstream
(OPENAI_BASE_URL) is the session's fault-injecting mock, started once for this folder (``gateway_web``), and
official ``openai`` SDK clients (API keys come from ``make_key``, tests/fixtures/factories.py).

The gateway answers with committed rows only (it runs in another process), so every test module uses
``pytestmark = pytest.mark.django_db(transaction=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import openai
import pytest

from agentops.config.models import ModelRoute, Provider, RetryPolicy, RuntimeSettings
from agentops.config.source import bump_version, config_source
from tests.fixtures.factories import seed_prices
from tests.fixtures.stack import Proc, gateway_process, reseed_runtime
from tests.fixtures.stack import start_gateway_web as start_gateway_web  # the gateway modules import it from here

ROUTE = "gw-route"  # a route whose primary is MOCK_A and backup MOCK_B, both on the "mock" provider
MOCK_A, MOCK_B = "mock-a", "mock-b"
UPSTREAM_ONLY = "mock-upstream"  # no route and no provider lists it: the OPENAI_BASE_URL upstream answers
FAST_RETRY = {"max_retries": 2, "base_delay": 0.01, "max_delay": 0.05, "multiplier": 2.0, "jitter": False}


@pytest.fixture(scope="session")
def gateway_web(stack_env, logdir, mock_openai) -> Iterator[Proc]:
    """This folder's gateway process, started once (tests/fixtures/stack.py, ``gateway_process``)."""
    yield from gateway_process(stack_env, logdir, mock_openai)


@pytest.fixture
def gateway(gateway_web, mock, redis_client, transactional_db) -> str:
    """The gateway's base URL (``…/v1``) with the runtime seed put back, a "mock" provider serving MOCK_A
    and MOCK_B, the route ROUTE over them, fast retries, and the seed prices (no budgets)."""
    reseed_runtime()
    seed_prices()
    provider, _ = Provider.objects.update_or_create(
        name="mock",
        defaults={
            "kind": "openai",
            "base_url": mock.base_url,
            "api_key": "sk-test",
            "served_models": f"{MOCK_A}, {MOCK_B}",
        },
    )
    ModelRoute.objects.update_or_create(
        operation=ROUTE,
        defaults={
            "primary_provider": provider,
            "primary_model": MOCK_A,
            "backup_provider": provider,
            "backup_model": MOCK_B,
            "use_rules": False,
            "use_human": False,
        },
    )
    RetryPolicy.objects.update(**FAST_RETRY)
    RuntimeSettings.objects.update(adaptive_timeouts=False, llm_timeout=5.0, breaker_failure_threshold=3)
    bump_version()
    config_source().invalidate()
    return gateway_web.extra["url"] + "/v1"


@pytest.fixture
def client(gateway, make_key) -> Callable[..., openai.OpenAI]:
    """``client(key=None, **kwargs)``: an ``openai.OpenAI`` pointed at the gateway (a new agent key by default)."""

    def make(key: str | None = None, **kwargs) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=gateway, api_key=key or make_key(), **kwargs)

    return make


@pytest.fixture
def async_client(gateway, make_key) -> Callable[..., openai.AsyncOpenAI]:
    def make(key: str | None = None, **kwargs) -> openai.AsyncOpenAI:
        kwargs.setdefault("max_retries", 0)
        return openai.AsyncOpenAI(base_url=gateway, api_key=key or make_key(), **kwargs)

    return make
