"""Shared fixtures for the /api/v1 tests: API keys and httpx clients bound to the live uvicorn server.

    def test_something(make_key, api):
        key = make_key("t-steps", scopes=["runs"])
        response = api(key).post("/runs", json={"input": {}})

Every test using these runs against the real server (`web` fixture), so it needs committed rows:
the module must use ``pytestmark = pytest.mark.django_db(transaction=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.fixtures.stack import reseed_runtime

API_PREFIX = "/api/v1"


@pytest.fixture
def base_url(web, redis_client, transactional_db) -> str:
    """The live server's root URL (no /api/v1); the runtime settings a flush removed are put back."""
    reseed_runtime()
    return web.extra["url"]


@pytest.fixture
def make_key(transactional_db) -> Callable[..., str]:
    """``make_key(agent="t-agent", scopes=None) -> str``: a new API key (the agent row is created if
    missing; no scopes = every agent scope, never admin)."""
    from agentops.keys.actions import create_api_key

    def make(agent: str = "t-agent", scopes: list[str] | None = None) -> str:
        _row, key = create_api_key(agent, scopes=scopes)
        return key

    return make


@pytest.fixture
def api(base_url) -> Iterator[Callable[..., httpx.Client]]:
    """``api(key) -> httpx.Client`` with base URL ``<live server>/api/v1`` and the bearer header set
    (``api(None)`` sends no Authorization header). Clients are closed at teardown."""
    clients: list[httpx.Client] = []

    def make(key: str | None, timeout: float = 30.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        client = httpx.Client(base_url=base_url + API_PREFIX, headers=headers, timeout=timeout)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


CLIENT_AGENT = "t-steps"  # a registered agent function (tests.fixtures.test_agents), so the key can start runs


@pytest.fixture
def ops(base_url, make_key):
    """The Python client (agentops/client.py) with a key of CLIENT_AGENT, closed at teardown."""
    from agentops import client

    with client.AgentOps(base_url, make_key(CLIENT_AGENT), timeout=10) as agent_ops:
        yield agent_ops


@pytest.fixture
def reviewer(transactional_db):
    """A signed-up user who decides escalations through review.actions."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("api-reviewer", password="x" * 20)
