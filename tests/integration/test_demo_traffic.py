"""`manage.py simulate_traffic` as `make run` uses it: over HTTP against the live uvicorn server and a real
Celery worker, with the demo's models on the fault-injecting mock (as seed_demo routes them).

It proves the demo traffic is what an outside agent does: runs started through the REST API with the
command's own keys (used, then revoked at exit), permission requests that escalate, and a plain openai-SDK
app whose gateway calls reach the usage ledger and whose sensitive tool calls escalate (about 25 s); and
that the paced demo leaves the shared global daily budget room for everyone else (about 60 s).
"""

from __future__ import annotations

import io
import re
import time

import httpx
import pytest
from django.apps import apps
from django.core.management import call_command
from django.db.models import F, Sum
from django.utils import timezone

from agentops.demo.traffic import TokenPacer
from agentops.keys import actions as key_actions
from agentops.keys.models import ApiKey
from agentops.runs.actions import lifecycle
from agentops.runs.models import Run
from budgets.actions import alerts, periods
from budgets.models import Budget, BudgetCounter, Reservation, UsageRecord
from budgets.seed import DAILY_NAME, seed_budget_defaults
from review.models import Escalation
from tests.fixtures.stack import reseed_runtime
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

REST_AGENTS = ("support-refund", "research")
GATEWAY_AGENT = "openai-sdk"


@pytest.fixture
def demo_stack(redis_client, mock, web, worker, tmp_path) -> str:
    """What `make run` has before the traffic starts: the migration's prices and budgets and the demo seed
    with its models on the mock (no faults: the test is about where the traffic goes). Returns the URL."""
    reseed_runtime()
    seed_budget_defaults(apps.get_model)  # the data migration's rows, which a transactional flush removed
    call_command(
        "seed_demo", "--quiet", f"--mock-url={mock.base_url}", credentials_file=str(tmp_path / "credentials.txt")
    )
    url = web.extra["url"]
    key = key_actions.create_api_key("demo-traffic-probe", scopes=["gateway"])[1]

    def web_serves_the_demo_routes() -> bool:  # the web process reloads its config within a second
        listed = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5).json()
        return {"summarize", "response"} <= {model["id"] for model in listed.get("data", [])}

    wait_for(web_serves_the_demo_routes, timeout=10, message="the web process to serve the demo's routes")
    return url


def settle_our_runs(token: str) -> None:
    """Cancel what the traffic left queued, running or waiting, so the worker is idle before the flush."""
    runs = Run.objects.filter(session_id__startswith=f"sim-{token}-")
    for run in runs.exclude(status__in=("succeeded", "failed", "cancelled")):
        lifecycle.cancel_run(run.pk)
    wait_for(lambda: not runs.filter(status__in=("queued", "running")).exists(), timeout=30, message="our runs to stop")


def test_demo_traffic_goes_through_the_rest_api_and_the_gateway(demo_stack):
    out = io.StringIO()
    call_command(
        "simulate_traffic",
        url=demo_stack,
        rate=2,
        duration=8,
        gateway_rate=3,
        seed=11,
        max_in_flight=40,
        tokens_per_minute=0,  # unpaced: this test is about where the traffic goes, not how fast
        stdout=out,
    )
    text = out.getvalue()
    token = text.split("simulate_traffic ", 1)[1].split(":", 1)[0]
    try:
        assert f"simulate_traffic {token}: done; started" in text, text

        # Runs: started over HTTP with this command's keys, which were used and are revoked now.
        keys = {key.agent.name: key for key in ApiKey.objects.filter(name=f"simulate_traffic {token}")}
        assert set(keys) == {*REST_AGENTS, GATEWAY_AGENT}
        assert all(key.last_used_at is not None and key.revoked_at is not None for key in keys.values()), keys
        runs = Run.objects.filter(session_id__startswith=f"sim-{token}-")
        assert {run.agent.name for run in runs} == set(REST_AGENTS)
        assert runs.filter(idempotency_key__startswith=f"sim-{token}-").count() == runs.count() >= 10

        # The openai-SDK app's calls went through the gateway into the ledger, in its sessions.
        ledger = UsageRecord.objects.filter(agent=GATEWAY_AGENT, session_id__startswith=f"sim-{token}-gw-")
        assert ledger.count() >= 5
        assert (
            ledger.filter(model="gpt-4o-2024-08-06").exists() and ledger.filter(model="gpt-4o-mini-2024-07-18").exists()
        )

        # Escalations with no run: a permission request (the first run start asks about a large refund) and
        # a sensitive tool call the mock model proposed in a gateway answer.
        ours = Escalation.objects.filter(source="api", run=None, session_id__startswith=f"sim-{token}-")
        asked = ours.filter(agent__name__in=REST_AGENTS)
        assert asked.filter(operation="issue_refund", reason="high_value_decision").exists(), list(asked.values())
        from_gateway = ours.filter(agent__name=GATEWAY_AGENT)
        assert from_gateway.filter(operation__in=("send_email", "delete_customer_data")).exists()
        assert all(e.context.get("tool_call_id") for e in from_gateway)

        assert "REST API:" in text and f"gateway ({GATEWAY_AGENT}, openai SDK):" in text
    finally:
        settle_our_runs(token)


DEMO_AGENTS = (*REST_AGENTS, GATEWAY_AGENT)
DAY_MINUTES = 24 * 60


def demo_tokens(since) -> dict[str, int]:
    """Each demo agent's ledger tokens since ``since`` (cache hits cost none)."""
    rows = (
        UsageRecord.objects.filter(agent__in=DEMO_AGENTS, created_at__gte=since, cached=False)
        .values("agent")
        .annotate(tokens=Sum(F("input_tokens") + F("output_tokens")))
    )
    return {agent: 0 for agent in DEMO_AGENTS} | {row["agent"]: row["tokens"] for row in rows}


def test_paced_demo_traffic_keeps_the_global_daily_budget_under_its_alert_threshold(demo_stack, settings):
    """The issue: unpaced, `make run`'s demo spent the seeded 100,000-token global daily budget in about 16
    minutes, and every agent got 429 for the rest of the day. Now each demo agent has a hard daily budget
    of its own (together under the global budget's alert threshold), and the traffic is paced to
    DEMO_TOKENS_PER_MINUTE per agent. Checked fast: the pacing clock runs `scale` times faster, so 45 s
    are 7.5 h of demo; the traffic asks for far more than its pace (a run a second, three gateway calls a
    second), so the pace, not idleness, is what holds it back."""
    scale, duration = 600, 45
    tokens_per_minute = settings.DEMO_TOKENS_PER_MINUTE
    everyone = Budget.objects.get(name=DAILY_NAME)
    threshold = everyone.limit_tokens * everyone.soft_threshold_pct / 100
    own = {
        b.scope_key: b
        for b in Budget.objects.filter(
            scope="agent", scope_key__in=DEMO_AGENTS, period="day", hard_stop=True, limit_tokens__isnull=False
        )
    }
    assert set(own) == set(DEMO_AGENTS), own
    assert sum(b.limit_tokens for b in own.values()) < threshold  # a hard bound, whatever the pace
    head_start = TokenPacer(1).head_start_minutes
    assert 0 < tokens_per_minute * (head_start + DAY_MINUTES) * len(DEMO_AGENTS) < threshold  # the pace's day

    since = timezone.now()
    began = time.monotonic()
    out = io.StringIO()
    call_command(
        "simulate_traffic",
        url=demo_stack,
        rate=1,
        duration=duration,
        gateway_rate=3,
        seed=5,
        max_in_flight=20,
        time_scale=scale,
        stdout=out,
    )
    minutes = (time.monotonic() - began) * scale / 60  # of demo time: what the pace allowed
    text = out.getvalue()
    token = text.split("simulate_traffic ", 1)[1].split(":", 1)[0]
    try:
        assert f"paced to {tokens_per_minute:g} tokens/min per agent" in text, text
        held = dict(re.findall(r"([\w-]+) (\d+)", text.split("held back by the pace: ", 1)[1].splitlines()[0]))
        # The traffic asked for more than its pace (the gateway app most of all: three calls a second).
        assert set(held) == set(DEMO_AGENTS) and int(held[GATEWAY_AGENT]) > 0, text
    finally:
        settle_our_runs(token)
    wait_for(
        lambda: not Reservation.objects.filter(agent__in=DEMO_AGENTS, status="held").exists(),
        timeout=30,
        message="the settles",
    )

    spent = demo_tokens(since)
    # Each agent spent what its pace allowed (head start included), plus at most about one run beyond it.
    allowance = tokens_per_minute * (head_start + minutes)
    for agent, tokens in spent.items():
        assert 0 < tokens <= allowance + 2_000, (agent, tokens, allowance, text)
    # Projected over a day at the rate observed, the demo stays under the global budget's alert threshold...
    projected = sum(spent.values()) / minutes * DAY_MINUTES
    assert projected < threshold, (spent, minutes, projected, text)
    # ...and so does the global budget now: a newcomer still has room.
    counter = BudgetCounter.objects.get(
        budget=everyone, subject="", period_start=periods.period_start(everyone, timezone.now())
    )
    assert alerts.utilization(everyone, counter.spent_tokens + counter.reserved_tokens, 0) * 100 < (
        everyone.soft_threshold_pct
    )
