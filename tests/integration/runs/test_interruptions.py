"""Runs that infrastructure interrupts (found by tests/chaos): a lost execute_run message, PostgreSQL away
mid-run or at the claim, a run re-executed after its human decision. Executions run in this process
(execution.execute_run) so that a fault can be injected exactly where it happened under chaos."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.test import Client
from django.utils import timezone

from agentops.runs import execution
from agentops.runs.actions import agents as agent_actions
from agentops.runs.actions import journal, lifecycle
from agentops.runs.models import Run, Step, ToolEffect
from review.models import Escalation
from tests.fixtures.people import AGENT_A, ROOT, client_for
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def in_process(monkeypatch) -> list[int]:
    """Executions of this test run here only: no execute_run message reaches the session's Celery worker (a
    worker started by an earlier test would otherwise claim the run between this test's steps). Returns the
    ids of the runs that would have been sent."""
    sent: list[int] = []
    monkeypatch.setattr(lifecycle, "send_execution", lambda run_pk, countdown=0: sent.append(run_pk) or True)
    return sent


def start(agent_name: str, data: dict, **kwargs) -> Run:
    return lifecycle.start_run(agent_actions.ensure_agent(agent_name), data, **kwargs)[0]


def waiting_step(run: Run) -> Step:
    return Step.objects.get(run=run, status="waiting_human")


@pytest.mark.parametrize("interrupted_as", ["running", "failed"])
def test_a_decided_step_is_carried_out_again_and_the_human_is_not_asked_twice(defaults, in_process, interrupted_as):
    run = start("t-approval", {"to": "ana@example.com"})
    assert execution.execute_run(run.pk) == "waiting_human"
    step = waiting_step(run)
    lifecycle.decide_step(
        run.pk, step.seq, {"decision": "modified", "arguments": {"to": "bo@example.com", "body": "ok"}}
    )
    # The execution after the decision began the tool and then its worker died (running) or the tool failed
    # and the run was retried (failed): either way the step holds the decision and is not completed.
    Step.objects.filter(pk=step.pk).update(status=interrupted_as, executions=1)

    assert execution.execute_run(run.pk) == "succeeded"
    step.refresh_from_db()
    assert Escalation.objects.filter(run=run).count() == 1  # asked once
    assert (step.status, step.executions, step.decision["decision"]) == ("completed", 2, "modified")
    effect = ToolEffect.objects.get(idempotency_key=f"run:{run.pk}:step:{step.seq}")
    assert effect.payload["to"] == "bo@example.com"  # the reviewer's arguments, not the agent's


def test_a_run_interrupted_by_postgresql_goes_back_to_the_queue_and_then_finishes(defaults, in_process, monkeypatch):
    run = start("t-steps", {"steps": 2})
    real_finish, calls = journal.step_finish, []

    def finish_until_the_database_goes(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 2:  # the second step's journal write meets a restarting PostgreSQL
            raise OperationalError("terminating connection due to administrator command")
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(journal, "step_finish", finish_until_the_database_goes)
    assert execution.execute_run(run.pk) == "requeued"
    run.refresh_from_db()
    assert (run.status, run.lease_owner, run.error_class) == ("queued", "", "")  # not failed

    assert execution.execute_run(run.pk) == "succeeded"
    run.refresh_from_db()
    assert run.executions == 2 and run.output["results"] == ["step 0", "step 1"]
    first = Step.objects.get(run=run, seq=1)
    assert first.executions == 1  # the step journaled before the outage replayed


def test_postgresql_away_before_the_first_step_requeues_the_run_and_stops_its_heartbeat(
    defaults, in_process, monkeypatch
):
    from agentops.runs.leases import keeper

    run = start("t-steps", {"steps": 1})

    def trace_write_fails(*args, **kwargs):
        raise OperationalError("terminating connection due to administrator command")

    monkeypatch.setattr(lifecycle, "record_trace_id", trace_write_fails)
    assert execution.execute_run(run.pk) == "requeued"
    assert Run.objects.get(pk=run.pk).status == "queued"
    # A lease still kept would be renewed for a run nobody executes, and beat would never reclaim it.
    assert not keeper.holds(run.pk)


def test_a_claim_that_meets_postgresql_away_is_handed_to_the_task_retry(defaults, in_process, monkeypatch):
    run = start("t-steps", {"steps": 1})

    def claim_fails(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(lifecycle, "claim_run", claim_fails)
    with pytest.raises(execution.ClaimUnavailable):
        execution.execute_run(run.pk)
    assert Run.objects.get(pk=run.pk).status == "queued"


def test_a_run_whose_message_was_lost_is_enqueued_again_by_beat(defaults, worker, monkeypatch):
    from agentops.lib import queue
    from agentops.runs.tasks import reclaim_runs

    def broker_away(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to the broker")

    with monkeypatch.context() as patched:
        patched.setattr(queue, "send_now", broker_away)
        run = start("t-steps", {"steps": 1})  # committed; its message could not be sent
    assert Run.objects.get(pk=run.pk).status == "queued"

    assert reclaim_runs() == {"reclaimed": [], "requeued": []}  # not stale yet: a backlog is not re-sent
    Run.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timedelta(seconds=61))
    assert reclaim_runs()["requeued"] == [run.pk]
    # A worker took the re-sent message and executed the run (how its steps end is other tests' business).
    executed = Run.objects.filter(pk=run.pk).exclude(status__in=("queued", "running"))
    found = wait_for(executed.first, timeout=30, interval=0.05, message="the re-sent run to be executed")
    assert found.executions == 1 and found.status in ("succeeded", "waiting_human"), (found.status, found.error)


def test_the_api_answers_503_with_retry_after_when_postgresql_is_away(defaults, monkeypatch):
    key = AGENT_A.key(["runs"])

    def database_away(*args, **kwargs):
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(lifecycle, "start_run", database_away)
    response = Client().post(
        "/api/v1/runs",
        {"agent": "t-steps", "input": {"steps": 1}},
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "2"
    assert response.json()["error"]["code"] == "database_unavailable"


def test_a_stale_run_whose_message_still_waits_in_the_queue_is_not_sent_twice(defaults, settings, monkeypatch):
    from agentops.lib.broker import queue_keys
    from agentops.lib.redis import runtime_redis
    from agentops.runs.actions import recovery
    from agentops.runs.tasks import execute_run

    assert execute_run.app.conf.task_default_queue == "default"  # Celery read its settings before the change
    settings.CELERY_TASK_DEFAULT_QUEUE = "requeue-test"  # the queue requeue_stale_runs reads: no worker's
    sent = []
    monkeypatch.setattr(lifecycle, "send_execution", lambda run_pk, **_: sent.append(run_pk))
    waiting, lost = start("t-steps", {"steps": 1}), start("t-steps", {"steps": 1})
    sent.clear()
    execute_run.apply_async(args=[waiting.pk], queue="requeue-test")  # a real message, behind a backlog
    Run.objects.filter(pk__in=[waiting.pk, lost.pk]).update(updated_at=timezone.now() - timedelta(seconds=120))
    try:
        assert recovery.requeue_stale_runs(60) == [lost.pk]
        assert sent == [lost.pk]
    finally:
        runtime_redis().delete(*queue_keys("requeue-test"))


def test_a_page_answers_503_with_retry_after_when_postgresql_is_away(defaults, monkeypatch):
    from agentops.runs import views as runs_views

    client = client_for(ROOT)

    def database_away(*args, **kwargs):
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(runs_views, "render", database_away)
    response = client.get("/runs/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert b"The database is unavailable" in response.content


def test_a_step_still_in_flight_is_marked_begun_once_and_a_fast_one_only_written_at_its_end(defaults, in_process):
    """The journal writes a step once, when it ends; the lease keeper marks begun (running on the timeline,
    counted should its worker die) a step still in flight after leases.MARK_AFTER, and that step's end then
    counts no second execution."""
    import threading

    from django.db import connection

    run = start("t-steps", {"steps": 1, "pause": 0.9})
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:  # what a timeline would show as running meanwhile
        try:
            while not done.is_set():
                seen.update(Step.objects.filter(run=run, status="running").values_list("name", flat=True))
                time.sleep(0.05)
        finally:
            connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert execution.execute_run(run.pk) == "succeeded"
    finally:
        done.set()
        watcher.join()
    assert "t_sleep" in seen and "t_echo" not in seen
    steps = Step.objects.filter(run=run).order_by("seq")
    assert [(s.name, s.status, s.executions) for s in steps][1:] == [
        ("t_sleep", "completed", 1),
        ("t_echo", "completed", 1),
    ]
