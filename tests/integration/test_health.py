"""Liveness, readiness and metrics, through Django and through a real uvicorn process."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.fixtures.runtime import free_port
from tests.fixtures.stack import start_web


def test_healthz_is_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["X-Request-ID"]


@pytest.mark.django_db
def test_readyz_reports_every_dependency_ok(client):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "broker"}
    assert all(check["ok"] for check in body["checks"].values())


def test_readyz_names_each_dependency_that_is_down(stack_env, logdir, tmp_path):
    """A web process whose PostgreSQL is unreachable and whose Redis is then stopped."""
    redis_port = free_port()
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    env = {
        **stack_env,
        "DATABASE_URL": f"postgresql://agentops@127.0.0.1:{free_port()}/agentops",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "READYZ_TIMEOUT": "0.5",
        "DB_CONNECT_TIMEOUT": "1",
    }
    env.pop("CELERY_BROKER_URL", None)
    web = None
    try:
        web = start_web(env, logdir)
        first = httpx.get(web.extra["url"] + "/readyz", timeout=10)
        assert first.status_code == 503
        assert first.json()["failing"] == ["database"]
        assert first.json()["checks"]["redis"]["ok"] is True

        redis.terminate()
        redis.wait(5)
        second = httpx.get(web.extra["url"] + "/readyz", timeout=10)
        assert second.status_code == 503
        assert second.json()["failing"] == ["database", "redis", "broker"]
        assert "Error" in second.json()["checks"]["redis"]["error"]
        # liveness stays green: a dependency outage must not get the process restarted
        assert httpx.get(web.extra["url"] + "/healthz", timeout=5).status_code == 200
    finally:
        if web:
            web.stop()
        if redis.poll() is None:
            redis.kill()


@pytest.mark.django_db  # the pending-escalations gauge is counted at scrape time
def test_metrics_exposes_the_seed_metrics(client):
    body = client.get("/metrics").content.decode()
    for name in ("agent_requests_total", "agent_response_seconds", "agent_active_sessions", "agent_memory_usage_bytes"):
        assert f"# HELP {name}" in body or f"# TYPE {name}" in body, name


@pytest.mark.django_db
def test_metrics_counts_the_open_escalations_per_queue_at_scrape_time(client):
    from review import actions as review
    from tests.fixtures.factories import make_escalation

    waiting, with_experts, decided = make_escalation(), make_escalation(), make_escalation()
    review.escalate_to_expert(with_experts.pk, None, comment="deadline passed", system=True)
    review.decide(decided.pk, None, "approved")
    body = client.get("/metrics").content.decode()
    assert 'agentops_escalations_pending{queue="reviewers"} 1.0' in body
    assert 'agentops_escalations_pending{queue="experts"} 1.0' in body
    assert waiting.pk  # the one still with the reviewers
