"""Shared fixtures for the /api/v1 tests: httpx clients bound to the live uvicorn server (API keys come from
``make_key``, tests/fixtures/factories.py; the people who decide escalations from the cast).

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

from agentops.client import AgentOps
from tests.fixtures.stack import reseed_runtime

API_PREFIX = "/api/v1"


@pytest.fixture
def base_url(web, redis_client, transactional_db) -> str:
    """The live server's root URL (no /api/v1); the runtime settings a flush removed are put back."""
    reseed_runtime()
    return web.extra["url"]


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
    with AgentOps(base_url, make_key(CLIENT_AGENT), timeout=10) as agent_ops:
        yield agent_ops
