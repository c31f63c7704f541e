"""The demo agents end to end on a real Celery worker, with the models on the real fault-injecting mock.

Routes like the ones `make run` sets: primaries on the mock, backups on the offline simulated provider.
Retry back-offs are shortened so the faults cost milliseconds; Retry-After is the server's.
"""

from __future__ import annotations

import time

import pytest
from django.core.management import call_command

from agentops.config import actions as config_actions
from agentops.config.models import RetryPolicy
from agentops.config.source import config_source
from agentops.demo.agents import tools
from agentops.demo.management.commands.seed_demo import route_demo_models_to_mock
from agentops.runs.actions import agents as agent_actions
from agentops.runs.actions import lifecycle
from agentops.runs.models import Run, Step, ToolEffect
from tests.fixtures.factories import held_by_no_worker, run_in
from tests.fixtures.stack import reseed_runtime
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG_RELOAD_SECONDS = 1.2  # workers probe the config version at most once a second


def route_models_to(mock) -> None:
    """The same routing `make run` sets up: primaries on the mock, backups on the simulated provider."""
    route_demo_models_to_mock(mock.base_url)


@pytest.fixture
def demo(redis_client, settings, mock):
    """Seed defaults, demo routes on the mock, fast back-offs; wait until workers use them."""
    settings.AGENTOPS_AGENT_MODULES = []
    reseed_runtime()
    route_models_to(mock)
    for policy in RetryPolicy.objects.all():
        policy.base_delay, policy.max_delay, policy.jitter = 0.05, 0.2, False
        if policy.error_class == "ServiceUnavailable":
            policy.max_retries = 2
        config_actions.save_runtime_object(policy)
    config_source().invalidate()
    time.sleep(CONFIG_RELOAD_SECONDS)
    return mock


def start(agent: str, data: dict) -> Run:
    run, _ = lifecycle.start_run(agent_actions.ensure_agent(agent), data)
    return run


def steps_of(run: Run) -> list[Step]:
    return list(Step.objects.filter(run=run).order_by("seq"))


def step(run: Run, name: str, **filters) -> Step:
    return Step.objects.get(run=run, name=name, **filters)


def escalation_of(waiting: Step) -> dict:
    """What the reviewer was asked (the review queue's escalation for the waiting step)."""
    from review.models import Escalation

    escalation = Escalation.objects.get(pk=waiting.escalation_id, run_id=waiting.run_id, step_seq=waiting.seq)
    return {f: getattr(escalation, f) for f in ("reason", "priority", "value", "confidence", "arguments", "state")}


def an_order(prefix: str, *, status: str = "delivered", over: float = 0.0) -> dict:
    for n in range(1000, 9999):
        order = tools.order_book(f"{prefix}-{n}")
        if order["status"] == status and order["total"] > over:
            return order
    raise AssertionError("no such order in the fake order book")


def test_support_refund_survives_faults_suspends_for_the_email_and_finishes_once_approved(demo, worker):

    order = an_order("A")
    # planning's primary: rate limited (Retry-After 0.3 s), then overloaded twice → the backup answers
    demo.script("gpt-4o", ["429:0.3", "503", "503"])
    run = start("support-refund", {"order_id": order["order_id"], "message": "My order arrived broken."})
    run = wait_for(run_in(run.pk, "waiting_human"))

    steps = steps_of(run)
    assert [(s.kind, s.name, s.status) for s in steps] == [
        ("phase", "planning", "completed"),
        ("llm", "planning", "completed"),
        ("llm", "classify", "completed"),
        ("phase", "tool_search", "completed"),
        ("tool", "lookup_order", "completed"),
        ("cache", "user_profiles", "completed"),
        ("phase", "tool_execution", "completed"),
        ("tool", "issue_refund", "completed"),
        ("tool", "send_email", "waiting_human"),
    ]
    planning = step(run, "planning", kind="llm")
    assert planning.handler == "backup" and planning.attempts == 4
    primary, backup = planning.hops
    assert primary["handler"] == "primary" and primary["outcome"] == "failed" and primary["attempts"] == 3
    assert primary["error_class"] == "ServiceUnavailable" and primary["reason"] == "max_retries"
    assert primary["waits"][0] == pytest.approx(0.3)  # the server's Retry-After, not the policy's curve
    assert backup["handler"] == "backup" and backup["outcome"] == "ok" and backup["target"] == "simulated:gpt-4o-mini"
    assert (
        step(run, "classify").model == "gpt-4o-mini-2024-07-18"
    )  # routed by operation to the small model (dated answer)
    assert step(run, "lookup_order").result["email"] == order["email"]

    email = step(run, "send_email")
    assert email.executions == 0 and escalation_of(email)["reason"] == "sensitive_operation"
    assert email.arguments["args"]["to"] == order["email"]
    assert wait_for(held_by_no_worker(run.pk), timeout=10)  # no worker holds a waiting run

    lifecycle.decide_step(run.pk, email.seq, {"decision": "approved"})
    run = wait_for(run_in(run.pk, "succeeded"))
    assert run.output["status"] == "refunded" and run.output["refund"]["amount"] == order["total"]
    assert run.output["email"]["message_id"].startswith("<msg-")
    assert run.output["answer"].startswith("Mock answer to:")
    assert run.executions == 2  # executed, suspended, resumed
    steps = steps_of(run)
    assert all(s.executions == 1 for s in steps), [(s.name, s.executions) for s in steps]
    assert [s.status for s in steps][-2:] == ["completed", "completed"]  # response phase and its llm
    for name in ("issue_refund", "send_email"):
        key = step(run, name).idempotency_key
        assert key == f"run:{run.pk}:step:{step(run, name).seq}"
        assert ToolEffect.objects.filter(idempotency_key=key).count() == 1
    refund = ToolEffect.objects.get(idempotency_key=step(run, "issue_refund").idempotency_key)
    assert refund.payload["amount"] == order["total"] and refund.payload["order_id"] == order["order_id"]
    assert demo.stats()["by_model"]["gpt-4o"] == 3  # the primary was asked three times, never again on resume


def test_a_high_value_refund_waits_for_a_reviewer_and_a_rejection_is_answered(demo, worker):
    order = an_order("B2B", over=1000)
    run = wait_for(run_in(start("support-refund", {"order_id": order["order_id"]}).pk, "waiting_human"))
    refund = step(run, "issue_refund")
    escalation = escalation_of(refund)
    assert escalation["reason"] == "high_value_decision" and escalation["priority"] == "high"
    assert escalation["value"] == order["total"] and refund.executions == 0

    lifecycle.decide_step(run.pk, refund.seq, {"decision": "rejected", "comment": "fraud check first"})
    run = wait_for(run_in(run.pk, "succeeded"))
    assert run.output["status"] == "refund_rejected" and run.output["email"] is None
    assert (
        "fraud check first"
        in Step.objects.get(run=run, kind="llm", name="response").arguments["messages"][1]["content"]
    )
    assert not ToolEffect.objects.filter(idempotency_key__startswith=f"run:{run.pk}:").exists()
    assert step(run, "issue_refund").executions == 0  # rejected: its work never started
    assert all(s.executions == 1 for s in steps_of(run) if s.kind != "phase" and s.name != "issue_refund")


def test_an_archived_order_skips_the_optional_lookup_and_escalates_for_low_confidence(demo, monkeypatch):
    """In-process execution with a short tool_search phase (the real one allows 10 s)."""
    from agentops.runs import execution
    from agentops.runtime.context import RunSettings
    from agentops.runtime.timeouts import STEP_DEFAULTS

    monkeypatch.setattr(tools, "ARCHIVE_LATENCY", 1.0)
    monkeypatch.setattr(
        execution, "run_settings", lambda: RunSettings(phase_timeouts={**STEP_DEFAULTS, "tool_search": 0.2})
    )
    order = tools.order_book("ARCH-123456")
    data = {"order_id": order["order_id"], "amount": 80.0, "email": order["email"], "message": "Refund please"}
    run = Run.objects.create(agent=agent_actions.ensure_agent("support-refund"), input=data)  # not enqueued
    assert execution.execute_run(run.pk) == "waiting_human"

    search = Step.objects.get(run=run, kind="phase", name="tool_search")
    assert search.status == "skipped" and search.error_class == "Timeout"
    refund = step(run, "issue_refund")
    escalation = escalation_of(refund)
    assert refund.status == "waiting_human" and escalation["reason"] == "low_confidence"
    assert escalation["confidence"] == 0.5 and escalation["value"] == 80.0


def test_research_retries_through_faults_and_a_second_run_reads_its_searches_from_the_cache(demo, worker):
    topic = f"tidal energy {time.time_ns()}"  # unique: workers keep an in-memory cache between tests
    # gpt-4o answers planning first, then the summary: connection reset, then overloaded, then ok
    demo.script("gpt-4o", ["ok", "reset", "503"])
    run = wait_for(run_in(start("research", {"topic": topic, "depth": 3}).pk, "succeeded"))
    summary = step(run, "summarize")
    assert summary.phase == "response_generation" and summary.handler == "primary" and summary.attempts == 3
    assert summary.error_class == "ServiceUnavailable"  # the last error on the way
    assert [(h["handler"], h["outcome"], h["attempts"]) for h in summary.hops] == [("primary", "ok", 3)]
    searches = list(Step.objects.filter(run=run, name="web_search").order_by("seq"))
    assert len(searches) == 3 and not any(s.cache_hit for s in searches)
    assert run.output["summary"].startswith("Mock answer to:") and len(run.output["sources"]) >= 3
    assert not run.output["search_skipped"]
    assert all(s.executions == 1 for s in steps_of(run))

    again = wait_for(run_in(start("research", {"topic": topic, "depth": 3}).pk, "succeeded"))
    cached = list(Step.objects.filter(run=again, name="web_search").order_by("seq"))
    assert [s.cache_hit for s in cached] == [True, True, True] and all(s.attempts == 0 for s in cached)
    assert [s.result for s in cached] == [s.result for s in searches]
    assert demo.stats()["last_request"]["body"]["max_tokens"] == 800  # the long summary's budget


def test_simulate_traffic_starts_runs_at_the_given_rate(demo, worker, capsys):
    started = time.monotonic()
    call_command("simulate_traffic", rate=10, duration=0.5, agents="research", seed=3)
    assert time.monotonic() - started < 5
    runs = Run.objects.filter(agent__name="research", session_id__startswith="sim-")
    assert 4 <= runs.count() <= 6
    assert all(r.input["topic"] and 2 <= r.input["depth"] <= 4 for r in runs)
    wait_for(lambda: all(r.status == "succeeded" for r in runs.all()), message="the simulated runs to succeed")
    out = capsys.readouterr().out
    assert "started" in out and "done" in out


def test_support_refund_loads_the_profile_through_the_user_profiles_cache(demo):
    """In-process: the first run reads the CRM (a miss), the second run for the same customer hits the
    user_profiles cache; both journal a `cache` step whose result the resumed run would replay."""
    from agentops import wiring
    from agentops.observability.metrics import CACHE_REQUESTS
    from agentops.runs import execution
    from agentops.runtime.cache import cache_key

    order = an_order("A")
    profiles = wiring.agent_caches()["user_profiles"]
    assert (profiles.spec.ttl_seconds, profiles.spec.max_entries) == (86400, 100)  # the seed's, from the settings
    profiles.delete(cache_key("user_profiles", {"key": order["email"]}))

    def counted(result: str) -> float:
        return CACHE_REQUESTS.labels(cache="user_profiles", result=result)._value.get()

    misses, hits = counted("miss"), counted("hit_memory")
    runs = []
    for _ in range(2):
        run = Run.objects.create(
            agent=agent_actions.ensure_agent("support-refund"), input={"order_id": order["order_id"]}
        )
        assert execution.execute_run(run.pk) == "waiting_human"  # the email waits for a reviewer
        runs.append(step(run, "user_profiles", kind="cache"))
    first, second = runs
    assert first.result == second.result == tools.customer_profile(order["email"])
    assert (first.cache_hit, second.cache_hit, second.attempts) == (False, True, 0)
    assert first.phase == "tool_search" and first.arguments == {"key": order["email"]}
    assert (counted("miss") - misses, counted("hit_memory") - hits) == (1, 1)
    response_facts = Step.objects.filter(run_id=second.run_id, kind="tool", name="send_email").get()
    assert response_facts.status == "waiting_human"
