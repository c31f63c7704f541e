"""Deadlines and resuming on a real Celery worker: an overdue escalation moves to the expert queue once,
overdue again the safe default (reject) applies and the suspended run resumes with it; and every kind of
decision taken through review.actions.decide resumes the run the way the agent expects.

Time passing is simulated by moving `deadline_at` into the past (tests may write rows directly)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from agentops.config import actions as config_actions
from agentops.config.source import bump_version, config_source
from agentops.runs.actions import agents as agent_actions
from agentops.runs.models import Run, Step, ToolEffect
from review import actions as review
from review.actions import DecisionConflict
from review.models import AuditEvent, Escalation, EscalationPolicy
from tests.fixtures import factories
from tests.fixtures.factories import run_in
from tests.fixtures.people import CHARLIE
from tests.fixtures.stack import reseed_runtime
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

PROPOSED = {"to": "ana@example.com", "body": "refund issued"}


@pytest.fixture
def defaults(redis_client, settings):
    """Flushes between transactional tests remove the seed rows; put them back, and make the worker
    reload its runtime config and policy rows (it may hold those of an earlier test)."""
    settings.AGENTOPS_AGENT_MODULES = ["tests.fixtures.test_agents"]
    reseed_runtime()
    config_source().invalidate()
    bump_version()


def waiting_approval_run(to: str = PROPOSED["to"]) -> tuple[Run, Escalation]:
    """A t-approval run suspended on its sensitive send_note step, and that step's escalation (checked)."""
    run, escalation = factories.waiting_approval_run(to)
    step = Step.objects.get(run=run, status="waiting_human")
    assert (step.name, step.seq, step.escalation_id) == ("send_note", escalation.step_seq, escalation.pk)
    assert (escalation.operation, escalation.reason, escalation.priority) == (
        "send_note",
        "sensitive_operation",
        "high",
    )
    assert escalation.arguments == PROPOSED | {"to": to} and escalation.state == "pending"
    return run, escalation


def overdue(escalation: Escalation) -> None:
    Escalation.objects.filter(pk=escalation.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))


def effect_of(run: Run, seq: int) -> ToolEffect | None:
    return ToolEffect.objects.filter(idempotency_key=f"run:{run.pk}:step:{seq}").first()


# --- deadlines -------------------------------------------------------------------------------------
def test_overdue_goes_to_experts_once_then_the_safe_default_resumes_the_run(defaults, worker):
    run, escalation = waiting_approval_run()
    first_deadline = escalation.deadline_at
    assert 590 <= (first_deadline - escalation.created_at).total_seconds() <= 601  # the default 600 s
    assert review.expire_overdue() == {"to_experts": [], "expired": []}  # nothing is due yet

    overdue(escalation)
    assert review.expire_overdue() == {"to_experts": [escalation.pk], "expired": []}
    moved = Escalation.objects.get(pk=escalation.pk)
    assert (moved.queue, moved.state, moved.decision) == ("experts", "pending", "")
    assert moved.escalated_at is not None and moved.deadline_at > timezone.now() + timedelta(seconds=590)
    assert review.expire_overdue() == {"to_experts": [], "expired": []}  # moved once, fresh deadline
    assert Run.objects.get(pk=run.pk).status == "waiting_human"

    overdue(escalation)
    assert review.expire_overdue() == {"to_experts": [], "expired": [escalation.pk]}
    expired = Escalation.objects.get(pk=escalation.pk)
    assert (expired.state, expired.decision, expired.queue) == ("expired", "rejected", "experts")
    assert expired.decided_at is not None and expired.decided_by is None and "safe default" in expired.comment
    assert review.expire_overdue() == {"to_experts": [], "expired": []}  # applied once

    run = wait_for(run_in(run.pk, "succeeded", "failed"))
    assert run.status == "succeeded", run.error
    assert run.output["sent"] is None and "rejected" in run.output["rejected"]
    assert "safe default" in run.output["rejected"]
    assert "no reviewer decided in time" in run.output["rejected"]  # the agent is not told a reviewer rejected it
    assert "by a reviewer" not in run.output["rejected"]
    assert effect_of(run, escalation.step_seq) is None  # the rejected side effect never happened
    step = Step.objects.get(run=run, seq=escalation.step_seq)
    assert step.status == "completed" and step.result["rejected"] is True and step.handler == "human"
    assert step.decision["decision"] == "rejected" and step.decision["escalation"] == escalation.pk

    log = list(AuditEvent.objects.filter(escalation=escalation))
    assert [(e.event, e.actor_id) for e in log] == [("created", None), ("escalated_to_expert", None), ("expired", None)]
    assert log[1].data == {"comment": "deadline passed", "automatic": True}
    assert log[2].data == {"decision": "rejected"}

    with pytest.raises(DecisionConflict, match="expired and the safe default"):
        review.decide(escalation.pk, CHARLIE.user(), "approved")


def test_the_deadline_comes_from_the_policy_and_a_held_claim_does_not_stop_it(defaults, worker, alice, erin):
    agent = agent_actions.ensure_agent("t-approval")
    config_actions.save_runtime_object(EscalationPolicy(agent=agent, operation="send_note", deadline_seconds=30))
    time.sleep(1.2)  # the worker reloads its policy rows within about a second of the version bump
    run, escalation = waiting_approval_run()
    assert 25 <= (escalation.deadline_at - escalation.created_at).total_seconds() <= 31

    review.claim(escalation.pk, alice)  # a reviewer opened it and walked away
    overdue(escalation)
    assert review.expire_overdue()["to_experts"] == [escalation.pk]
    moved = Escalation.objects.get(pk=escalation.pk)
    assert (moved.queue, moved.state, moved.claimed_by_id) == ("experts", "pending", None)
    assert 25 <= (moved.deadline_at - timezone.now()).total_seconds() <= 31  # the policy's deadline again

    # an expert decides in time: the run resumes with the approval
    decided = review.decide(escalation.pk, erin, "approved", comment="checked", confidence=100)
    assert decided.decision == "approved"
    overdue(escalation)
    assert review.expire_overdue() == {"to_experts": [], "expired": []}  # decided items never expire
    run = wait_for(run_in(run.pk, "succeeded", "failed"))
    assert run.status == "succeeded" and run.output["after"] == "after", run.error
    assert effect_of(run, escalation.step_seq).payload == PROPOSED


# --- every decision kind resumes the run --------------------------------------------------------------
def test_without_a_deadline_of_its_own_an_escalation_waits_the_human_timeout_of_the_runtime_settings(defaults, worker):
    from agentops.config.models import RuntimeSettings

    assert EscalationPolicy().deadline_seconds is None  # a new policy follows the human timeout
    row = RuntimeSettings.objects.get()
    assert row.human_timeout == 600.0 and config_source().get().timeouts.human == 600.0  # the seed's layer
    row.human_timeout = 45.0  # what the admin's "human timeout" field edits
    config_actions.save_runtime_object(row)
    # a policy that changes other thresholds and leaves the deadline blank follows it too
    config_actions.save_runtime_object(EscalationPolicy(operation="send_note", high_value_above=5000))
    time.sleep(1.2)  # the worker reloads its runtime config within about a second of the version bump
    _run, escalation = waiting_approval_run()
    assert 40 <= (escalation.deadline_at - escalation.created_at).total_seconds() <= 46

    overdue(escalation)
    assert review.expire_overdue()["to_experts"] == [escalation.pk]
    moved = Escalation.objects.get(pk=escalation.pk)
    assert 40 <= (moved.deadline_at - timezone.now()).total_seconds() <= 46  # the expert gets the same wait


def test_approved_runs_the_tool_with_the_proposed_arguments(defaults, worker, alice):
    run, escalation = waiting_approval_run()
    review.claim(escalation.pk, alice)
    current = Escalation.objects.get(pk=escalation.pk)
    review.decide(escalation.pk, alice, "approved", comment="fine", confidence=90, version=current.version)
    run = wait_for(run_in(run.pk, "succeeded", "failed"))
    assert run.status == "succeeded", run.error
    effect = effect_of(run, escalation.step_seq)
    assert effect.payload == PROPOSED and effect.tool == "send_note"
    assert run.output == {"sent": {"effect_id": effect.pk, "created": True}, "after": "after"}
    steps = list(Step.objects.filter(run=run).order_by("seq"))
    assert [(s.name, s.status, s.executions) for s in steps] == [
        ("t_echo", "completed", 1),
        ("send_note", "completed", 1),  # the held call ran exactly once, after the approval
        ("t_echo", "completed", 1),
    ]
    assert steps[1].decision["decision"] == "approved" and steps[1].decision["comment"] == "fine"


def test_modified_runs_the_tool_with_the_reviewers_arguments(defaults, worker, alice):
    run, escalation = waiting_approval_run()
    edited = {"to": "ana@example.org", "body": "refund of 42 EUR issued"}
    review.decide(escalation.pk, alice, "modified", arguments=edited, comment="typo in the address")
    run = wait_for(run_in(run.pk, "succeeded", "failed"))
    assert run.status == "succeeded", run.error
    effect = effect_of(run, escalation.step_seq)
    assert effect.payload == edited  # the reviewer's arguments, not the proposed ones
    assert run.output["sent"] == {"effect_id": effect.pk, "created": True} and run.output["after"] == "after"
    step = Step.objects.get(run=run, seq=escalation.step_seq)
    assert step.arguments["args"] == edited and step.decision["arguments"] == edited
    assert Escalation.objects.get(pk=escalation.pk).final_arguments == edited


def test_taken_over_makes_the_reviewers_result_the_step_result(defaults, worker, alice):
    run, escalation = waiting_approval_run()
    written = {"sent_by_hand": True, "channel": "phone"}
    review.decide(escalation.pk, alice, "taken_over", result=written, comment="called her instead")
    run = wait_for(run_in(run.pk, "succeeded", "failed"))
    assert run.status == "succeeded", run.error
    assert run.output == {"sent": written, "after": "after"}
    assert effect_of(run, escalation.step_seq) is None  # the tool itself never ran
    step = Step.objects.get(run=run, seq=escalation.step_seq)
    assert step.status == "completed" and step.result == written and step.handler == "human"
    assert step.executions == 0


def test_rejected_reaches_the_agent_code_which_handles_it(defaults, worker, alice):
    run, escalation = waiting_approval_run()
    review.decide(escalation.pk, alice, "rejected", comment="wrong customer", confidence=100)
    run = wait_for(run_in(run.pk, "succeeded", "failed"))
    assert run.status == "succeeded", run.error
    assert run.output["sent"] is None
    assert "rejected" in run.output["rejected"] and "wrong customer" in run.output["rejected"]
    assert effect_of(run, escalation.step_seq) is None
    step = Step.objects.get(run=run, seq=escalation.step_seq)
    assert step.result == {"rejected": True, "comment": "wrong customer"}


def test_a_losing_reviewer_does_not_resume_the_run_twice(defaults, worker, alice, erin):
    run, escalation = waiting_approval_run()
    review.decide(escalation.pk, alice, "approved")
    with pytest.raises(DecisionConflict, match=r"Already decided \(approved\) by alice"):
        review.decide(escalation.pk, erin, "rejected", comment="too late")
    run = wait_for(run_in(run.pk, "succeeded", "failed"))
    assert run.status == "succeeded" and run.output["after"] == "after"
    assert effect_of(run, escalation.step_seq).payload == PROPOSED
    assert Step.objects.get(run=run, seq=escalation.step_seq).decision["decision"] == "approved"
