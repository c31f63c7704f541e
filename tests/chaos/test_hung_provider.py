"""A provider that hangs: its breaker opens, the backup takes over, runs still finish within the request timeout.

The planning route's primary model is served by the mock with every request hanging (the mock's `hang`
fault: no answer until the client gives up); the backup model on the same mock answers. Runs that plan
(t-steps) execute on the two workers, and agents call the same route through the gateway.

Proves: every run succeeds — so within its request timeout, which ctx enforces (a run past it fails with
RequestTimeout) — with its plan written by the backup; the primary's breaker (shared in Redis by every
process) is open, so the hanging model was tried only about as often as the breaker's threshold before
everything skipped it; the gateway skips it too and answers from the backup.

Costs about 5 s.
"""

from __future__ import annotations

import time

import openai
import pytest

from agentops.config.models import ModelRoute, Provider, RetryPolicy, RuntimeSettings
from agentops.config.source import bump_version, config_source
from agentops.keys import actions as key_actions
from agentops.runs.models import Step
from agentops.wiring import breaker_registry
from tests.chaos.harness import Progress, record_row, start_runs, statuses

pytestmark = pytest.mark.slow

HUNG, HEALTHY = "chaos-hung", "chaos-healthy"
LLM_TIMEOUT = 1.0  # seconds per attempt: the hang costs this much each time it is tried
THRESHOLD = 3  # breaker: failures before it opens
REQUEST_TIMEOUT = 30.0


@pytest.fixture
def hung_primary(chaos_db, mock):
    """planning → mock:HUNG (hangs), backup mock:HEALTHY; one retry; the breaker opens after THRESHOLD failures."""
    provider, _ = Provider.objects.update_or_create(
        name="mock",
        defaults={
            "kind": "openai",
            "base_url": mock.base_url,
            "api_key": "sk-chaos",
            "served_models": f"{HUNG}, {HEALTHY}",
        },
    )
    ModelRoute.objects.update_or_create(
        operation="planning",
        defaults={
            "primary_provider": provider,
            "primary_model": HUNG,
            "backup_provider": provider,
            "backup_model": HEALTHY,
            "use_rules": False,
            "use_human": False,
        },
    )
    RetryPolicy.objects.update(max_retries=1, base_delay=0.01, max_delay=0.05, jitter=False)
    RuntimeSettings.objects.update(
        adaptive_timeouts=False,
        llm_timeout=LLM_TIMEOUT,
        request_timeout=REQUEST_TIMEOUT,
        breaker_failure_threshold=THRESHOLD,
        breaker_recovery_seconds=300,
    )
    mock.rates(HUNG, {"hang": 1.0})
    bump_version()
    config_source().invalidate()
    breaker_registry().get("mock", HUNG).reset()
    time.sleep(1.2)  # every process reloads the runtime config within a second
    yield
    mock.reset()  # let go of the hanging requests


def test_a_hung_provider_opens_its_breaker_and_the_backup_finishes_the_runs(stack, hung_primary, mock, scale, request):
    started = time.monotonic()
    runs = start_runs([("t-steps", {"topic": f"hung {i}", "steps": 1}) for i in range(scale.hung_runs)])
    Progress(runs, stall_seconds=30, timeout=REQUEST_TIMEOUT + 30).until_done()

    sdk = openai.OpenAI(
        base_url=stack.web.extra["url"] + "/v1",
        api_key=key_actions.create_api_key("chaos-gateway", scopes=["gateway"])[1],
        max_retries=0,
        timeout=REQUEST_TIMEOUT,
    )
    gateway = [
        sdk.chat.completions.with_raw_response.create(model="planning", messages=[{"role": "user", "content": "plan"}])
        for _ in range(3)
    ]

    plans = list(Step.objects.filter(run_id__in=runs, kind="llm", name="planning"))
    hung_tries = mock.stats()["by_model"].get(HUNG, 0)
    skipped = [
        s for s in plans if any(h.get("target") == f"mock:{HUNG}" and h.get("reason") == "breaker_open" for h in s.hops)
    ]
    breaker = breaker_registry().get("mock", HUNG).snapshot()
    record_row(
        request,
        "hung provider",
        runs=f"{len(runs)} runs + {len(gateway)} gateway calls",
        **{
            "kills/restarts": f"primary hangs; breaker {breaker.get('state')}",
            "terminal": " ".join(f"{k}={v}" for k, v in sorted(statuses(runs).items())),
            "duplicate effects": "-",
            "re-executed steps": "-",
            "records lost": f"hung model tried {hung_tries}× (threshold {THRESHOLD}); {len(skipped)} runs skipped it",
            "seconds": round(time.monotonic() - started, 1),
        },
    )
    print("breaker:", breaker, "plans:", [(s.run_id, s.handler, s.model, s.attempts) for s in plans])

    assert statuses(runs) == {"succeeded": len(runs)}
    assert {(s.handler, s.model) for s in plans} == {("backup", HEALTHY)}
    assert str(breaker["state"]) == "open", breaker
    # Each of the four pool processes may have been waiting on the hang when the breaker opened; after that
    # nobody asked the hung model again.
    assert hung_tries <= THRESHOLD + 4, hung_tries
    assert skipped, [(s.run_id, s.attempts, s.hops) for s in plans]  # later runs skipped the primary at once
    for raw in gateway:
        assert (raw.headers["x-agentops-handler"], raw.parse().model) == ("backup", HEALTHY), dict(raw.headers)
    assert mock.stats()["by_model"].get(HUNG, 0) == hung_tries  # the gateway skipped it as well
