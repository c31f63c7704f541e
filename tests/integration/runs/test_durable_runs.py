"""Durable runs on real Celery workers: suspend/resume, crash recovery, phases, retries, spans."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from celery.exceptions import TimeoutError as CeleryTimeoutError

from agentops.config import actions as config_actions
from agentops.runs.actions import agents as agent_actions
from agentops.runs.actions import lifecycle
from agentops.runs.models import Run, Step, ToolEffect
from agentops.runtime.model_names import base_model_name
from tests.fixtures.factories import held_by_no_worker, run_in
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def start(agent_name: str, data: dict, **kwargs) -> Run:
    run, _ = lifecycle.start_run(agent_actions.ensure_agent(agent_name), data, **kwargs)
    return run


def steps_of(run: Run) -> list[Step]:
    return list(Step.objects.filter(run=run).order_by("seq"))


def test_a_run_executes_every_step_once_on_a_worker(defaults, worker):
    run = wait_for(run_in(start("t-steps", {"topic": "durability", "steps": 3, "note": True}).pk, "succeeded"))
    assert run.output["results"] == ["step 0", "step 1", "step 2"]
    assert [(s.kind, s.name, s.status, s.executions) for s in steps_of(run)] == [
        ("llm", "planning", "completed", 1),
        ("tool", "t_echo", "completed", 1),
        ("tool", "t_echo", "completed", 1),
        ("tool", "t_echo", "completed", 1),
        ("tool", "write_note", "completed", 1),
    ]
    planning = steps_of(run)[0]
    # The route's primary model answered (under its dated name when the mock serves it, as real providers do).
    assert base_model_name(planning.model) == "gpt-4o" and planning.handler == "primary" and planning.input_tokens > 0
    assert run.input_tokens == planning.input_tokens and run.trace_id
    assert ToolEffect.objects.filter(idempotency_key=f"run:{run.pk}:step:5").count() == 1


def test_suspend_holds_no_worker_and_a_decision_resumes_the_run(defaults, worker):
    run = wait_for(run_in(start("t-approval", {"to": "ana@example.com"}).pk, "waiting_human"))
    waiting = Step.objects.get(run=run, status="waiting_human")
    assert waiting.name == "send_note" and waiting.executions == 0
    assert waiting.arguments["escalation"]["reason"] == "sensitive_operation"
    assert wait_for(held_by_no_worker(run.pk), timeout=10)  # the waiting run holds no worker

    # another run goes through meanwhile
    assert wait_for(run_in(start("t-steps", {"steps": 1}).pk, "succeeded")).status == "succeeded"

    lifecycle.decide_step(
        run.pk, waiting.seq, {"decision": "modified", "arguments": {"to": "ana@example.org", "body": "refund issued"}}
    )
    run = wait_for(run_in(run.pk, "succeeded"))
    assert run.output["after"] == "after"
    assert [s.executions for s in steps_of(run)] == [1, 1, 1]  # nothing completed ran twice
    effect = ToolEffect.objects.get(idempotency_key=f"run:{run.pk}:step:{waiting.seq}")
    assert effect.payload["to"] == "ana@example.org"  # the reviewer's arguments were used


def test_a_rejection_reaches_the_agent_code_which_handles_it(defaults, worker):
    run = wait_for(run_in(start("t-approval", {}).pk, "waiting_human"))
    seq = Step.objects.get(run=run, status="waiting_human").seq
    lifecycle.decide_step(run.pk, seq, {"decision": "rejected", "comment": "wrong customer"})
    run = wait_for(run_in(run.pk, "succeeded"))
    assert run.output["sent"] is None and "wrong customer" in run.output["rejected"]
    assert not ToolEffect.objects.filter(idempotency_key=f"run:{run.pk}:step:{seq}").exists()


def test_a_human_can_take_over_a_step(defaults, worker):
    run = wait_for(run_in(start("t-approval", {}).pk, "waiting_human"))
    seq = Step.objects.get(run=run, status="waiting_human").seq
    lifecycle.decide_step(run.pk, seq, {"decision": "taken_over", "result": {"sent_by_hand": True}})
    run = wait_for(run_in(run.pk, "succeeded"))
    assert run.output["sent"] == {"sent_by_hand": True}


def test_optional_phase_timeout_is_skipped_and_critical_one_fails_the_run(defaults, worker):
    skipped = wait_for(
        run_in(start("t-phases", {"search_seconds": 2, "search_timeout": 0.3}).pk, "succeeded", "failed")
    )
    assert skipped.status == "succeeded" and skipped.output["found"] == {"skipped": True}
    phase = Step.objects.get(run=skipped, kind="phase", name="tool_search")
    assert phase.status == "skipped" and phase.error_class == "Timeout"

    failed = wait_for(run_in(start("t-phases", {"answer_seconds": 2, "answer_timeout": 0.3}).pk, "succeeded", "failed"))
    assert failed.status == "failed" and failed.error_class == "PhaseTimeout"
    assert "response_generation" in failed.error


def _retry_policy(error_class: str, retries: int, delay: float) -> None:
    """Set one class's retry policy as an admin would (workers reload the config within a second)."""
    from agentops.config.models import RetryPolicy

    row = RetryPolicy.objects.get(error_class=error_class)
    row.max_retries, row.base_delay, row.max_delay = retries, delay, delay
    config_actions.save_runtime_object(row)
    time.sleep(1.2)


def test_slow_llm_answers_skip_an_optional_phase_and_fail_a_critical_one(defaults, worker, mock, client):
    """Through a real worker and the real mock: the seed's semantics with the timeouts an admin set."""
    from agentops.config.models import RuntimeSettings
    from agentops.demo.management.commands.seed_demo import route_demo_models_to_mock
    from review.models import Escalation
    from tests.fixtures.people import ROOT

    route_demo_models_to_mock(mock.base_url)  # the default chain: the mock's gpt-4o-mini, then simulated
    row = RuntimeSettings.objects.get()
    assert (row.tool_search_critical, row.planning_critical) == (False, True)  # the seed's
    row.tool_search_timeout, row.planning_timeout = 0.6, 0.8
    config_actions.save_runtime_object(row)
    time.sleep(1.2)  # workers reload the config within a second
    mock.script("gpt-4o-mini", ["delay:4000", "delay:4000"])  # both answers come far too late

    started = time.monotonic()
    run = wait_for(run_in(start("t-llm-phases", {}).pk, "succeeded", "failed", "waiting_human"))
    assert time.monotonic() - started < 4  # ended at the phase deadlines, not after the slow answers
    assert run.status == "failed" and run.error_class == "PhaseTimeout", (run.status, run.error)
    assert run.error == "critical phase 'planning' timed out after 0.8 s"
    assert not Escalation.objects.filter(run_id=run.pk).exists()  # nobody was asked to write an answer
    rows = [(s.kind, s.name, s.phase, s.status, s.error_class) for s in steps_of(run)]
    assert rows == [
        ("phase", "tool_search", "tool_search", "skipped", "Timeout"),
        ("llm", "lookup", "tool_search", "failed", "Timeout"),
        ("phase", "planning", "planning", "failed", "Timeout"),
        ("llm", "lookup", "planning", "failed", "Timeout"),
    ]
    search = steps_of(run)[0]
    assert search.end_seq == 2 and 500 <= search.duration_ms < 2000
    assert [(h["handler"], h["outcome"]) for h in steps_of(run)[1].hops][:2] == [
        ("primary", "failed"),
        ("backup", "deadline"),
    ]

    client.force_login(ROOT.user())
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "The critical phase “planning” did not finish within its 0.8 s timeout, so the run failed." in page
    assert "Skipped: the optional phase “tool_search” did not finish within its 0.6 s timeout" in page


def test_retry_from_the_last_checkpoint_replays_completed_steps(defaults, worker):
    _retry_policy("ConnectionError", 1, 0.01)  # a tool's failure follows its class's policy: one retry here
    run = wait_for(run_in(start("t-flaky", {}).pk, "failed"))
    assert run.error_class == "ConnectionError"  # ConnectionRefusedError, on the taxonomy
    first, flaky = steps_of(run)
    assert (first.status, flaky.status) == ("completed", "failed")
    assert (flaky.error_class, flaky.attempts) == ("ConnectionError", 2)

    ToolEffect.objects.create(idempotency_key=f"allow:{run.pk}", tool="test")
    lifecycle.retry_run(run.pk)
    run = wait_for(run_in(run.pk, "succeeded"))
    first, flaky = steps_of(run)
    assert first.executions == 1  # replayed from the journal
    assert flaky.executions == 2 and flaky.status == "completed"
    assert run.output == {"first": "checkpoint", "stock": 7}
    with pytest.raises(ValueError, match="only a failed run"):
        lifecycle.retry_run(run.pk)


def test_the_request_timeout_ends_a_runaway_run(defaults, worker):
    from agentops.config.models import RuntimeSettings

    row = RuntimeSettings.objects.get()
    row.request_timeout = 1.0
    config_actions.save_runtime_object(row)
    time.sleep(1.2)  # workers reload the config within a second
    run = wait_for(run_in(start("t-steps", {"steps": 6, "pause": 0.4}).pk, "failed", "succeeded"))
    assert run.status == "failed" and run.error_class == "RequestTimeout"


def test_cancel_a_waiting_run_and_a_running_one(defaults, worker):
    waiting = wait_for(run_in(start("t-approval", {}).pk, "waiting_human"))
    assert lifecycle.cancel_run(waiting.pk).status == "cancelled"
    running = start("t-steps", {"steps": 8, "pause": 0.3})
    wait_for(run_in(running.pk, "running"))
    lifecycle.cancel_run(running.pk)
    running = wait_for(run_in(running.pk, "cancelled", "succeeded"), timeout=20)
    assert running.status == "cancelled"
    assert Step.objects.filter(run=running).count() < 17


def _kill_worker_holding(run_pk: int) -> int:
    """kill -9 the whole worker (parent and pool children) whose pool process holds the run's lease."""
    owner_pid = int(Run.objects.get(pk=run_pk).lease_owner.split(":")[1])
    parent = int(Path(f"/proc/{owner_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    children = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    for pid in [str(parent), *children]:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    return parent


def test_kill_9_a_worker_mid_run_and_another_finishes_it(defaults, worker, stack_env, logdir):
    from agentops.runs.tasks import reclaim_runs
    from tests.fixtures.stack import start_worker

    second = start_worker(stack_env, logdir, name="second", concurrency=1)
    try:
        run = start("t-steps", {"steps": 6, "pause": 0.5, "note": True})
        completed = Step.objects.filter(run=run, status="completed")
        wait_for(lambda: completed.count() >= 4, timeout=30, interval=0.05, message="the run to complete 4 steps")
        killed = _kill_worker_holding(run.pk)
        done_before_kill = set(Step.objects.filter(run=run, status="completed").values_list("seq", flat=True))
        survivor, dead = (worker, second) if killed == second.popen.pid else (second, worker)
        dead.popen.wait(10)
        assert survivor.popen.poll() is None

        def reclaimed_and_finished() -> bool:
            if Run.objects.get(pk=run.pk).status == "succeeded":
                return True
            reclaim_runs.delay().get(timeout=10)  # what beat does every few seconds
            return False

        # A message sent as the worker dies can go to its broker connection before Redis has seen it close, and
        # is lost with it (as one of beat's would be): that poll times out, and the next sends another.
        wait_for(
            reclaimed_and_finished,
            timeout=40,
            interval=0.5,
            message=run_in(run.pk, "succeeded").describe,
            ignore=(CeleryTimeoutError,),
        )
    finally:
        second.stop()
    run.refresh_from_db()
    steps = steps_of(run)
    assert run.executions == 2
    assert all(s.executions == 1 for s in steps if s.seq in done_before_kill)  # never re-executed
    assert sum(s.executions - 1 for s in steps) <= 1  # at most the in-flight step ran again
    note_key = f"run:{run.pk}:step:{steps[-1].seq}"
    assert ToolEffect.objects.filter(idempotency_key=note_key).count() == 1
