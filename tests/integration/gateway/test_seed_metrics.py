"""The seed's metrics mean what they say, read from a real web process's ``/metrics``:
``agent_requests_total`` counts gateway calls, ``/api/v1`` calls and runs; ``agent_active_sessions`` the
sessions with any traffic in the last 5 minutes (the clock is moved, never slept); ``agent_queue_depth``
the messages waiting in each Celery queue."""

from __future__ import annotations

import httpx
import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from agentops.lib import activity, broker
from agentops.runs.actions import agents as agent_actions
from agentops.runs.actions import lifecycle
from agentops.runs.execution import execute_run
from agentops.runs.models import Run
from budgets.models import UsageRecord
from tests.fixtures.waiting import wait_for
from tests.integration.gateway.conftest import MOCK_A
from tests.integration.runs.conftest import TEST_AGENT_MODULES

pytestmark = pytest.mark.django_db(transaction=True)

ASK = [{"role": "user", "content": "What is the capital of France?"}]


def samples(text: str, name: str) -> dict[tuple, float]:
    """``{sorted label pairs: value}`` of one family in a scrape."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def requests_total(text: str) -> dict[tuple[str, str], float]:
    rows = samples(text, "agent_requests_total")
    return {(dict(k)["session_type"], dict(k)["success"]): v for k, v in rows.items()}


def scrape(gateway: str) -> str:
    response = httpx.get(gateway.removesuffix("/v1") + "/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def finish_a_run(session: str = "s-run") -> None:
    """One t-steps run, executed here (or by a worker of the session that took it first: its samples land
    in the same multiprocess directory)."""
    run, _ = lifecycle.start_run(agent_actions.ensure_agent("t-steps"), {"steps": 1}, session_id=session)
    execute_run(run.pk)
    assert wait_for(lambda: Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED, timeout=20)


@pytest.fixture
def agents(settings):
    settings.AGENTOPS_AGENT_MODULES = [TEST_AGENT_MODULES]


def test_agent_requests_total_counts_gateway_calls_rest_calls_and_runs(gateway, client, make_key, agents):
    key = make_key("t-metrics")
    base = gateway.removesuffix("/v1")
    before = requests_total(scrape(gateway))

    reply = client(key).chat.completions.create(model=MOCK_A, messages=ASK, max_tokens=20)
    assert reply.choices[0].message.content
    bad = httpx.post(f"{gateway}/chat/completions", json={"model": MOCK_A}, headers={"Authorization": f"Bearer {key}"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"

    listed = httpx.get(f"{base}/api/v1/runs", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert listed.status_code == 200 and listed.json()["items"] == []
    missing = httpx.get(f"{base}/api/v1/runs/999999", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert missing.status_code == 404
    assert httpx.get(f"{base}/api/v1/openapi.json", timeout=10).status_code == 200  # docs are not calls

    finish_a_run()

    after = requests_total(scrape(gateway))
    delta = {labels: after.get(labels, 0) - before.get(labels, 0) for labels in after}
    assert delta[("gateway", "true")] == 1 and delta[("gateway", "false")] == 1
    assert delta[("api", "true")] == 1 and delta[("api", "false")] == 1
    assert delta[("run", "true")] == 1 and delta[("run", "false")] == 0
    # the label set stays the seed's: three session types, two outcomes
    assert set(after) == {(t, s) for t in ("run", "gateway", "api") for s in ("true", "false")}


def test_agent_active_sessions_counts_sessions_seen_in_the_last_5_minutes(
    gateway, client, make_key, agents, redis_client, monkeypatch
):
    monkeypatch.setattr(activity, "_touched", {})  # this process's throttle forgets the other tests' sessions
    key = make_key("t-metrics")
    sdk = client(key)
    sdk.chat.completions.create(model=MOCK_A, messages=ASK, max_tokens=20, extra_headers={"X-Session-Id": "s-gw"})
    sdk.chat.completions.create(model=MOCK_A, messages=ASK, max_tokens=20, extra_headers={"X-Session-Id": "s-gw"})
    sdk.chat.completions.create(model=MOCK_A, messages=ASK, max_tokens=20, user="u-7")  # the body's user
    reported = httpx.post(
        gateway.removesuffix("/v1") + "/api/v1/usage",
        json={
            "model": "gpt-4o-mini",
            "operation": "chat",
            "input_tokens": 10,
            "output_tokens": 5,
            "session_id": "s-usage",
        },
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert reported.status_code == 201
    assert UsageRecord.objects.filter(agent="t-metrics", session_id="s-usage").count() == 1
    finish_a_run("s-run-active")  # a session no process has touched yet (each throttles its own touches)

    seen = {m.decode() for m in redis_client.zrange(activity.SESSIONS_KEY, 0, -1)}
    assert seen == {"t-metrics\ts-gw", "t-metrics\tu-7", "t-metrics\ts-usage", "t-steps\ts-run-active"}
    assert samples(scrape(gateway), "agent_active_sessions") == {(): 4.0}

    # Five minutes on, with no traffic: nobody is active, and the read trimmed the set.
    real = activity.clock
    monkeypatch.setattr(activity, "clock", lambda: real() + activity.ACTIVE_WINDOW_SECONDS + 1)
    assert activity.active_sessions() == 0
    assert redis_client.zcard(activity.SESSIONS_KEY) == 0
    # A session seen again counts again (the moved clock is this process's: the touch below is its own).
    activity.touch("t-metrics", "s-gw")
    assert activity.active_sessions() == 1
    # A process refreshes a session at most every TOUCH_EVERY_SECONDS: a busy session costs no Redis command.
    first = redis_client.zscore(activity.SESSIONS_KEY, "t-metrics\ts-gw")
    later = first + activity.TOUCH_EVERY_SECONDS - 1
    monkeypatch.setattr(activity, "clock", lambda: later)
    activity.touch("t-metrics", "s-gw")
    assert redis_client.zscore(activity.SESSIONS_KEY, "t-metrics\ts-gw") == first
    monkeypatch.setattr(activity, "clock", lambda: later + 2)
    activity.touch("t-metrics", "s-gw")
    assert redis_client.zscore(activity.SESSIONS_KEY, "t-metrics\ts-gw") == later + 2


def test_agent_queue_depth_counts_messages_parked_in_each_celery_queue(redis_client, settings):
    """A queue no worker consumes stands for a queue whose workers are stopped: every priority list counts."""
    settings.CELERY_TASK_DEFAULT_QUEUE = "t-parked"
    keys = broker.queue_keys("t-parked")
    try:
        redis_client.lpush(keys[0], b"m1", b"m2", b"m3")
        redis_client.lpush(keys[-1], b"m4")  # a message sent with a priority lives in another list
        assert broker.queue_depths() == {"t-parked": 4}
        django_client = Client()
        text = django_client.get("/metrics").content.decode()
        assert samples(text, "agent_queue_depth") == {(("queue", "t-parked"),): 4.0}
        redis_client.rpop(keys[0])
        assert samples(django_client.get("/metrics").content.decode(), "agent_queue_depth") == {
            (("queue", "t-parked"),): 3.0
        }
        # an unreachable broker leaves the gauge out of the scrape (an absent series alerts; a made-up 0 would not)
        settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
        response = django_client.get("/metrics")
        assert response.status_code == 200
        assert samples(response.content.decode(), "agent_queue_depth") == {}
        assert "agent_requests_total" in response.content.decode()
    finally:
        redis_client.delete(*keys)
