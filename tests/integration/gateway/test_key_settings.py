"""What an agent admin sets on the Agents screen, enforced on /v1 through the real uvicorn server with the
official ``openai`` SDK: a disabled agent's key gets OpenAI's 403 (``PermissionDeniedError``), an expired key
the 401 of a revoked one, a model outside the key's allowed models 403 (and /v1/models lists only the
allowed), the key's own rate limit 429 with Retry-After, and the key's in-flight cap 429 until one ends.

Settings are changed through the same actions the screen calls (agentops.runs.actions.agents.update_agent,
agentops.keys.actions.set_api_key_limits); this module's web process trusts a verified key for 0.2 s only, so
a change is seen at once."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import openai
import pytest
from django.utils import timezone

from agentops.keys import actions as key_actions
from agentops.lib import inflight
from agentops.runs.actions import agents as agent_actions
from budgets.models import UsageRecord
from tests.fixtures.stack import QUICK_KEY_CACHE_SECONDS, Proc
from tests.fixtures.waiting import wait_for
from tests.integration.gateway.conftest import MOCK_A, MOCK_B, ROUTE, UPSTREAM_ONLY

pytestmark = pytest.mark.django_db(transaction=True)

ASK = [{"role": "user", "content": "What is the capital of France?"}]
ANSWER = "Mock answer to: What is the capital of France?"
CACHE = QUICK_KEY_CACHE_SECONDS


@pytest.fixture
def gateway_web(quick_key_cache_web) -> Proc:
    """A gateway process with a CACHE-second key cache (a changed setting is seen at once): the session's
    (tests/fixtures/stack.py)."""
    return quick_key_cache_web


def openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


def answered(sdk: openai.OpenAI, model: str, agent: str) -> None:
    """One completion of ``model`` answered through the guard: content, usage, our headers, its ledger row."""
    before = UsageRecord.objects.filter(agent=agent).count()
    raw = sdk.chat.completions.with_raw_response.create(model=model, messages=ASK, max_tokens=20)
    reply = raw.parse()
    assert reply.choices[0].message.content == ANSWER and reply.usage.prompt_tokens > 0
    assert raw.headers["x-agentops-handler"] == "primary" and raw.headers["x-agentops-request-id"]
    rows = wait_for(lambda: list(UsageRecord.objects.filter(agent=agent).order_by("id"))[before:] or None)
    assert (rows[0].model, rows[0].input_tokens) == (reply.model, reply.usage.prompt_tokens)


def test_a_disabled_agents_key_gets_openais_403_and_works_again_once_enabled(client):
    _, key = key_actions.create_api_key("gw-switch")
    sdk = client(key)
    answered(sdk, MOCK_A, "gw-switch")
    agent_actions.update_agent("gw-switch", enabled=False)
    time.sleep(CACHE + 0.1)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk.chat.completions.create(model=MOCK_A, messages=ASK)
    error = refused.value.body
    assert refused.value.status_code == 403 and error["code"] == "agent_disabled" and "gw-switch" in error["message"]
    assert error["type"] == "permission_error"
    with pytest.raises(openai.PermissionDeniedError):
        sdk.models.list()
    assert UsageRecord.objects.filter(agent="gw-switch").count() == 1  # nothing went upstream
    agent_actions.update_agent("gw-switch", enabled=True)
    time.sleep(CACHE + 0.1)
    answered(sdk, MOCK_A, "gw-switch")


def test_an_expired_key_is_refused_like_a_revoked_one(client):
    row, key = key_actions.create_api_key("gw-expiring", expires_at=timezone.now() + timedelta(seconds=2))
    sdk = client(key)
    answered(sdk, MOCK_A, "gw-expiring")
    time.sleep(max(0.0, (row.expires_at - timezone.now()).total_seconds()) + 0.1)
    with pytest.raises(openai.AuthenticationError) as refused:  # still in the process's key cache: refused too
        sdk.chat.completions.create(model=MOCK_A, messages=ASK)
    assert refused.value.status_code == 401 and refused.value.body["code"] == "invalid_api_key"
    # another key of the agent is not affected; lifting the expiry is a limit change like any other
    _, other = key_actions.create_api_key("gw-expiring")
    answered(client(other), MOCK_A, "gw-expiring")


def test_a_key_calls_only_its_allowed_models(client, gateway):
    row, key = key_actions.create_api_key("gw-allowed", allowed_models=[ROUTE, MOCK_A])
    sdk = client(key)
    answered(sdk, MOCK_A, "gw-allowed")
    answered(sdk, ROUTE, "gw-allowed")  # a route: its primary answers (its backup stays behind it)
    for model in (MOCK_B, UPSTREAM_ONLY):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            sdk.chat.completions.create(model=model, messages=ASK)
        error = refused.value.body
        assert (error["code"], error["param"], error["type"]) == ("model_not_allowed", "model", "permission_error")
        assert model in error["message"] and MOCK_A in error["message"]
    assert {m.id for m in sdk.models.list()} == {ROUTE, MOCK_A}
    # streamed requests are refused before anything is sent too
    with httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        body = {"model": MOCK_B, "messages": ASK, "stream": True}
        assert openai_error(http.post("/chat/completions", json=body), 403)["code"] == "model_not_allowed"
    assert not UsageRecord.objects.filter(agent="gw-allowed", model__in=[MOCK_B, UPSTREAM_ONLY]).exists()
    # emptied on the screen: every model again
    key_actions.set_api_key_limits(row.pk, allowed_models=[])
    time.sleep(CACHE + 0.1)
    answered(sdk, MOCK_B, "gw-allowed")
    assert {MOCK_A, MOCK_B, ROUTE} <= {m.id for m in sdk.models.list()}


def test_a_keys_own_rate_limit_answers_429_with_retry_after(client, gateway):
    _, key = key_actions.create_api_key("gw-rated", rate_per_minute=3)
    _, neighbour = key_actions.create_api_key("gw-rated")  # the global default: untouched by the other's bucket
    sdk = client(key)
    for _ in range(3):  # a minute's worth at once
        answered(sdk, MOCK_A, "gw-rated")
    with httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        over = http.post("/chat/completions", json={"model": MOCK_A, "messages": ASK})
    error = openai_error(over, 429)
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert 10 <= float(over.headers["retry-after"]) <= 21, over.headers  # one token at 3 a minute: ~20 s
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model=MOCK_A, messages=ASK)
    answered(client(neighbour), MOCK_A, "gw-rated")


def test_a_keys_in_flight_cap_set_on_the_screen_answers_429_until_one_ends(client, gateway, mock):
    row, key = key_actions.create_api_key("gw-narrow")
    key_actions.set_api_key_limits(row.pk, max_in_flight=1)
    mock.script(UPSTREAM_ONLY, ["slow_body:10000"])
    with httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        body = {"model": UPSTREAM_ONLY, "messages": ASK, "stream": True, "max_tokens": 500, "mock_words": 200}
        stream = http.send(http.build_request("POST", "/chat/completions", json=body), stream=True)
        assert stream.status_code == 200
        chunks = stream.iter_bytes()
        next(chunks)
        assert inflight.in_flight(row.pk) == 1
        over = http.post("/chat/completions", json={"model": MOCK_A, "messages": ASK})
        error = openai_error(over, 429)
        assert error["code"] == "too_many_requests_in_flight" and over.headers["retry-after"] == "1"
        assert "1 requests" in error["message"]
        stream.close()
    wait_for(lambda: inflight.in_flight(row.pk) == 0, timeout=15, message="the slot to be released")
    answered(client(key), MOCK_A, "gw-narrow")
