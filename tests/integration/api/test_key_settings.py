"""What an agent admin sets on the Agents screen, enforced on /api/v1 through a real uvicorn server: a disabled
agent's keys get 403 ``agent_disabled`` (and its runs are refused, also those queued before), an expired key
the 401 of a revoked one, the key's own rate limit 429 with Retry-After (other keys keep the global default).

This module's web process trusts a verified key (and distrusts a bad one) for 0.2 s only, so a change is
seen at once."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from agentops.keys import actions as key_actions
from agentops.runs.actions import agents as agent_actions
from agentops.runs.actions import lifecycle
from agentops.runs.models import Agent, Run
from tests.fixtures.stack import QUICK_KEY_CACHE_SECONDS, reseed_runtime

pytestmark = pytest.mark.django_db(transaction=True)

CACHE = QUICK_KEY_CACHE_SECONDS
AGENT = "t-steps"  # a registered agent function (tests.fixtures.test_agents): its key can start runs


@pytest.fixture
def quick_web(quick_key_cache_web) -> str:
    """The session's gateway process with a CACHE-second key cache, good keys and bad (tests/fixtures/stack.py)."""
    return quick_key_cache_web.extra["url"] + "/api/v1"


@pytest.fixture
def api_url(quick_web, redis_client) -> str:
    reseed_runtime()
    return quick_web


def call(url: str, key: str, method: str = "GET", path: str = "/runs", **kwargs) -> httpx.Response:
    return httpx.request(method, url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30, **kwargs)


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:500])
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    return error


def test_a_disabled_agents_keys_get_403_and_its_runs_are_refused(api_url):
    _, key = key_actions.create_api_key(AGENT)
    started = call(api_url, key, "POST", json={"input": {"steps": 1}})
    assert started.status_code == 201, started.text
    queued = Run.objects.get(pk=started.json()["id"])

    agent_actions.update_agent(AGENT, enabled=False)
    time.sleep(CACHE + 0.1)
    error = error_of(call(api_url, key), 403, "agent_disabled")
    assert error["details"] == {"agent": AGENT} and "disabled" in error["message"]
    error_of(call(api_url, key, "POST", json={"input": {"steps": 1}}), 403, "agent_disabled")
    assert Run.objects.filter(agent__name=AGENT).count() == 1  # no run was made

    # in-process callers (demo traffic, a retry from the runs page) are refused by the action itself
    agent = Agent.objects.get(name=AGENT)
    with pytest.raises(lifecycle.AgentDisabled, match=AGENT):
        lifecycle.start_run(agent, {"steps": 1})
    # a run queued before the switch never executes: the worker's claim fails it
    Run.objects.filter(pk=queued.pk).update(status=Run.Status.QUEUED, executions=0)
    assert lifecycle.claim_run(queued.pk, "w-test", 30) is None
    queued.refresh_from_db()
    assert (queued.status, queued.error_class) == (Run.Status.FAILED, "AgentDisabled") and AGENT in queued.error
    with pytest.raises(lifecycle.AgentDisabled):
        lifecycle.retry_run(queued.pk)

    agent_actions.update_agent(AGENT, enabled=True)
    time.sleep(CACHE + 0.1)
    assert call(api_url, key).status_code == 200
    assert lifecycle.retry_run(queued.pk).status == Run.Status.QUEUED


def test_an_expired_key_is_refused_like_a_revoked_one(api_url):
    row, key = key_actions.create_api_key(AGENT, expires_at=timezone.now() + timedelta(seconds=1.5))
    assert call(api_url, key).status_code == 200
    time.sleep(max(0.0, (row.expires_at - timezone.now()).total_seconds()) + 0.1)
    error = error_of(call(api_url, key), 401, "unauthenticated")
    assert "expired" in error["message"]
    # lifting the expiry on the screen lets it in again (a bad key is remembered for a few seconds only)
    key_actions.set_api_key_limits(row.pk, expires_at=None)
    time.sleep(CACHE + 0.1)  # this server's API_KEY_NEGATIVE_CACHE_SECONDS
    assert call(api_url, key).status_code == 200


def test_a_keys_own_rate_limit_answers_429_with_retry_after(api_url):
    _, key = key_actions.create_api_key(AGENT, rate_per_minute=2)
    _, neighbour = key_actions.create_api_key(AGENT)
    assert [call(api_url, key).status_code for _ in range(2)] == [200, 200]
    over = call(api_url, key)
    error = error_of(over, 429, "rate_limited")
    assert 20 <= int(over.headers["retry-after"]) <= 31 and error["details"]["retry_after"] == int(
        over.headers["retry-after"]
    )  # one request every 30 s
    assert [call(api_url, neighbour).status_code for _ in range(5)] == [200] * 5  # the global default


def test_key_limits_are_validated_with_the_field_named(transactional_db):
    row, _ = key_actions.create_api_key("limits-agent")
    for limits, field in [
        ({"rate_per_minute": 0}, "rate_per_minute"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": None}, "max_in_flight"),
        ({"allowed_models": ["gpt 4o"]}, "allowed_models"),
    ]:
        with pytest.raises(ValidationError) as refused:
            key_actions.set_api_key_limits(row.pk, **limits)
        assert field in refused.value.message_dict, refused.value
    saved = key_actions.set_api_key_limits(row.pk, allowed_models=[" gpt-4o ", "gpt-4o", "", "planning"])
    assert saved.allowed_models == ["gpt-4o", "planning"]
    key_actions.revoke_api_key(row.pk)
    with pytest.raises(ValueError, match="revoked"):
        key_actions.set_api_key_limits(row.pk, rate_per_minute=5)
