"""The only code that changes agents, runs and their step journal."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import structlog
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from agentops.runs.models import Agent, Run, Step, ToolEffect

log = structlog.get_logger(__name__)


def _announce_run(run) -> None:
    from agentops.lib import live

    live.publish(f"run.{run.pk}", "run.changed", {"run": run.pk, "status": run.status})
    live.publish("runs", "run.changed", {"run": run.pk, "status": run.status})


def _enqueue_execution(run_pk: int, *, countdown: float = 0) -> None:
    transaction.on_commit(lambda: send_execution(run_pk, countdown=countdown))


def send_execution(run_pk: int, *, countdown: float = 0) -> bool:
    """Put the run's execute_run message on the broker. With the broker away the committed run stays queued
    and beat enqueues it again (requeue_stale_runs), so the caller still gets its answer."""
    from agentops.runs.tasks import execute_run

    try:
        if countdown:
            execute_run.apply_async(args=[run_pk], countdown=countdown)
        else:
            execute_run.delay(run_pk)
    except Exception:
        log.warning("run.enqueue_failed", run_id=run_pk, exc_info=True)
        return False
    return True


@transaction.atomic
def ensure_agent(name: str, *, description: str = "", team: str = "") -> Agent:
    """The agent's row, created if missing; a description replaces the old one, a team fills a blank one
    (a team an admin set is kept)."""
    agent, created = Agent.objects.get_or_create(name=name, defaults={"description": description, "team": team})
    changed = []
    if not created and description and agent.description != description:
        agent.description = description
        changed.append("description")
    if not created and team and not agent.team:
        agent.team = team
        changed.append("team")
    if changed:
        agent.save(update_fields=changed)
    if "team" in changed or (created and team):  # budgets read the agent's team with their directory
        from budgets.actions.directory import directory_changed

        transaction.on_commit(directory_changed)
    return agent


def sync_registered_agents() -> list[Agent]:
    """Make sure every registered agent function has its Agent row."""
    from agentops.demo.agents import load_agents

    return [ensure_agent(spec.name, description=spec.description) for spec in load_agents().values()]


@transaction.atomic
def start_run(agent: Agent, input_data, *, session_id: str = "", idempotency_key: str = "") -> tuple[Run, bool]:
    """Create a queued run and enqueue it after commit. With an idempotency key, a second call returns
    the first run (created=False) instead of starting another."""
    if idempotency_key:
        existing = Run.objects.filter(agent=agent, idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing, False
    try:
        # A concurrent identical request may insert first: the unique constraint (agent, idempotency_key)
        # makes this insert wait for it and fail, and then the winner's run is the answer.
        with transaction.atomic():
            run = Run.objects.create(
                agent=agent, input=input_data, session_id=session_id, idempotency_key=idempotency_key
            )
    except IntegrityError:
        if not idempotency_key:
            raise
        return Run.objects.get(agent=agent, idempotency_key=idempotency_key), False
    _enqueue_execution(run.pk)
    _announce_run(run)
    return run, True


@transaction.atomic
def claim_run(run_pk: int, worker: str, lease_seconds: float) -> Run | None:
    """Take a queued run (or one whose lease expired) for this worker. None when another worker has it
    or it moved on (a duplicate delivery exits quietly)."""
    run = Run.objects.select_for_update().select_related("agent").filter(pk=run_pk).first()
    if run is None:
        return None
    now = timezone.now()
    lease_expired = run.status == Run.Status.RUNNING and (run.lease_expires_at is None or run.lease_expires_at < now)
    if run.status != Run.Status.QUEUED and not lease_expired:
        return None
    if run.cancel_requested:
        _finish(run, Run.Status.CANCELLED, error="cancelled before it started")
        return None
    run.status = Run.Status.RUNNING
    run.lease_owner = worker
    run.lease_expires_at = now + timedelta(seconds=lease_seconds)
    run.executions += 1
    run.started_at = run.started_at or now
    run.version += 1
    run.save(
        update_fields=["status", "lease_owner", "lease_expires_at", "executions", "started_at", "version", "updated_at"]
    )
    _announce_run(run)
    return run


def record_trace_id(run_pk: int, trace_id: str) -> None:
    """The trace of the run's first execution (later executions link to the run through its id)."""
    Run.objects.filter(pk=run_pk, trace_id="").update(trace_id=trace_id)


def renew_lease(run_pk: int, worker: str, lease_seconds: float) -> tuple[bool, bool]:
    """Heartbeat: (still ours, cancel requested)."""
    updated = Run.objects.filter(pk=run_pk, lease_owner=worker, status=Run.Status.RUNNING).update(
        lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds)
    )
    cancel = Run.objects.filter(pk=run_pk, cancel_requested=True).exists()
    return updated == 1, cancel


def _locked_own_run(run_pk: int, worker: str) -> Run:
    """Lock the run row (only the columns a journal write checks) and make sure we still hold its lease."""
    from agentops.runtime.context import LeaseLost

    run = (
        Run.objects.select_for_update()
        .only("id", "agent_id", "lease_owner", "status", "cancel_requested")
        .filter(pk=run_pk)
        .first()
    )
    if run is None or run.lease_owner != worker or run.status != Run.Status.RUNNING:
        raise LeaseLost(f"run {run_pk} is no longer leased to {worker}")
    return run


@transaction.atomic
def step_begin(run_pk: int, worker: str, seq: int, kind: str, name: str, phase: str | None, arguments: dict) -> None:
    """Journal: the step's work starts now (committed first, so a crash mid-step is visible and counted).

    Hot path of every run: one locking read and one or two writes, no savepoint."""
    from agentops.runtime.context import RunCancelled

    run = _locked_own_run(run_pk, worker)
    if run.cancel_requested:  # checked before every step: cancelling never waits for a heartbeat
        raise RunCancelled(f"run {run_pk} was cancelled")
    changes = {
        "kind": kind,
        "name": name,
        "phase": phase or "",
        "status": Step.Status.RUNNING,
        "error": "",
        "error_class": "",
        "finished_at": None,
        "idempotency_key": f"run:{run_pk}:step:{seq}",
    }
    if arguments:
        changes["arguments"] = arguments
    if not Step.objects.filter(run_id=run_pk, seq=seq).update(executions=F("executions") + 1, **changes):
        Step.objects.create(run_id=run_pk, seq=seq, executions=1, **{"arguments": arguments or {}, **changes})
    _announce_step(run_pk, seq, Step.Status.RUNNING)


def _announce_step(run_pk: int, seq: int, status: str) -> None:
    from agentops.lib import live

    live.publish(f"run.{run_pk}", "step.changed", {"run": run_pk, "seq": seq, "status": status})


@transaction.atomic
def step_finish(
    run_pk: int,
    worker: str,
    seq: int,
    status: str,
    *,
    result=None,
    meta=None,
    error_class: str = "",
    error: str = "",
    end_seq: int | None = None,
) -> None:
    """Journal: the step's outcome (completed / skipped / failed); its tokens are added to the run."""
    _locked_own_run(run_pk, worker)
    changes = {
        "status": status,
        "result": result,
        "error": error,
        "end_seq": end_seq,
        "finished_at": timezone.now(),
        "error_class": error_class or (meta.error_class if meta and meta.error_class else ""),
    }
    if meta is not None:
        changes.update(
            attempts=meta.attempts,
            hops=meta.hops,
            cache_hit=meta.cache_hit,
            duration_ms=meta.duration_ms,
            input_tokens=meta.input_tokens,
            output_tokens=meta.output_tokens,
            model=meta.model or "",
            handler=meta.handler or "",
        )
    cost = Decimal(0)
    if meta is not None and (meta.input_tokens or meta.output_tokens):
        from budgets.actions.ledger import step_cost

        cost = step_cost(run_pk, seq)  # the ledger rows this step's calls wrote, priced when they were made
        changes["cost_usd"] = cost
    Step.objects.filter(run_id=run_pk, seq=seq).update(**changes)
    if meta is not None and (meta.input_tokens or meta.output_tokens):
        Run.objects.filter(pk=run_pk).update(
            input_tokens=F("input_tokens") + meta.input_tokens,
            output_tokens=F("output_tokens") + meta.output_tokens,
            cost_usd=F("cost_usd") + cost,
        )
    _announce_step(run_pk, seq, status)


@transaction.atomic
def step_wait_human(
    run_pk: int, worker: str, seq: int, *, reason: str, priority: str, payload: dict, meta=None, step=None
):
    """The step needs a human: record what they must decide. Returns the escalation id (the review
    queue creates a real escalation here). `step` = (kind, name, phase, arguments) for a step whose
    work has not begun (a tool call held for review)."""
    from review.escalator import open_escalation

    run = _locked_own_run(run_pk, worker)
    if step is not None:
        kind, name, phase, arguments = step
        step, _ = Step.objects.get_or_create(
            run=run, seq=seq, defaults={"kind": kind, "name": name, "phase": phase or "", "arguments": arguments}
        )
    else:
        step = Step.objects.get(run=run, seq=seq)
    step.status = Step.Status.WAITING_HUMAN
    if meta is not None and meta.hops:
        step.hops = meta.hops
    escalation_id = open_escalation(run, step, reason=reason, priority=priority, payload=payload)
    step.escalation_id = escalation_id
    step.arguments = {
        **(step.arguments or {}),
        "escalation": {"id": escalation_id, "reason": reason, "priority": priority},
    }
    step.save()
    _announce_step(run.pk, step.seq, step.status)
    return escalation_id


def _finish(
    run: Run, status: str, *, output=None, error: str = "", error_class: str = "", active_seconds: float | None = None
) -> None:
    run.status = status
    run.output = output
    run.error = error[:5000]
    run.error_class = error_class
    run.lease_owner = ""
    run.lease_expires_at = None
    if active_seconds is not None:
        run.active_seconds = active_seconds
    if status in Run.TERMINAL:
        run.finished_at = timezone.now()
    run.version += 1
    run.save()
    _announce_run(run)


@transaction.atomic
def suspend_run(run_pk: int, worker: str, active_seconds: float) -> None:
    """Release the worker: the run waits for a human decision (which re-enqueues it). A decision that
    arrived while this execution was still suspending found the run running and did not re-enqueue
    it, so in that case the run is queued again at once."""
    run = _locked_own_run(run_pk, worker)
    if Step.objects.filter(run=run, status=Step.Status.DECIDED).exists():
        _finish(run, Run.Status.QUEUED, active_seconds=active_seconds)
        _enqueue_execution(run.pk)
        return
    _finish(run, Run.Status.WAITING_HUMAN, active_seconds=active_seconds)


@transaction.atomic
def release_run(run_pk: int, worker: str, active_seconds: float) -> None:
    """Hand an interrupted execution's run back to the queue (PostgreSQL went away mid-run): it executes again
    from its journal, its completed steps replayed. The pause before that grows with the run's executions (2 s,
    4 s, ... at most a minute), so a store that keeps failing cannot spin a worker."""
    run = _locked_own_run(run_pk, worker)
    executions = Run.objects.values_list("executions", flat=True).get(pk=run_pk)
    _finish(run, Run.Status.QUEUED, active_seconds=active_seconds)
    _enqueue_execution(run.pk, countdown=min(2.0**executions, 60.0))


@transaction.atomic
def complete_run(run_pk: int, worker: str, output, active_seconds: float) -> None:
    run = _locked_own_run(run_pk, worker)
    _finish(run, Run.Status.SUCCEEDED, output=output, active_seconds=active_seconds)


@transaction.atomic
def fail_run(run_pk: int, worker: str, *, error_class: str, error: str, active_seconds: float) -> None:
    run = _locked_own_run(run_pk, worker)
    _finish(run, Run.Status.FAILED, error=error, error_class=error_class, active_seconds=active_seconds)


@transaction.atomic
def cancel_run(run_pk: int) -> Run:
    """Cancel at once when no worker holds the run; otherwise ask the worker (it stops before its next step)."""
    run = Run.objects.select_for_update().get(pk=run_pk)
    if run.is_terminal:
        return run
    if run.status == Run.Status.RUNNING:
        run.cancel_requested = True
        run.save(update_fields=["cancel_requested", "updated_at"])
        _announce_run(run)
    else:
        from review.actions import withdraw_for_run

        _finish(run, Run.Status.CANCELLED, error="cancelled")
        withdraw_for_run(run.pk, why="the run was cancelled")
    return run


@transaction.atomic
def finish_cancelled(run_pk: int, worker: str, active_seconds: float) -> None:
    run = _locked_own_run(run_pk, worker)
    _finish(run, Run.Status.CANCELLED, error="cancelled while running", active_seconds=active_seconds)


@transaction.atomic
def decide_step(run_pk: int, seq: int, decision: dict) -> Step:
    """A human decided a waiting step (approved / modified / taken_over / rejected); the run resumes."""
    run = Run.objects.select_for_update().get(pk=run_pk)
    step = Step.objects.select_for_update().get(run=run, seq=seq)
    if step.status != Step.Status.WAITING_HUMAN:
        raise ValueError(f"step {seq} of run {run_pk} is {step.status}, not waiting for a human")
    step.status = Step.Status.DECIDED
    step.decision = decision
    step.save(update_fields=["status", "decision"])
    if run.status == Run.Status.WAITING_HUMAN:
        run.status = Run.Status.QUEUED
        run.version += 1
        run.save(update_fields=["status", "version", "updated_at"])
        _enqueue_execution(run.pk)
    _announce_step(run.pk, step.seq, step.status)
    _announce_run(run)
    return step


@transaction.atomic
def retry_run(run_pk: int) -> Run:
    """Run a failed run again from its last checkpoint: completed steps replay, the failed one re-runs,
    and the request timeout starts afresh."""
    run = Run.objects.select_for_update().get(pk=run_pk)
    if run.status != Run.Status.FAILED:
        raise ValueError(f"only a failed run can be retried; run {run_pk} is {run.status}")
    run.status = Run.Status.QUEUED
    run.error, run.error_class, run.finished_at, run.active_seconds = "", "", None, 0.0
    run.version += 1
    run.save()
    _enqueue_execution(run.pk)
    _announce_run(run)
    return run


def reclaim_expired_runs() -> list[int]:
    """Beat: re-enqueue runs whose worker stopped renewing its lease (it died or hung)."""
    reclaimed = []
    for run_pk in Run.objects.filter(status=Run.Status.RUNNING, lease_expires_at__lt=timezone.now()).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            run = Run.objects.select_for_update(skip_locked=True).filter(pk=run_pk).first()
            if run is None or run.status != Run.Status.RUNNING or run.lease_expires_at >= timezone.now():
                continue
            log.warning("run.reclaimed", run_id=run.pk, dead_worker=run.lease_owner)
            run.status, run.lease_owner, run.lease_expires_at = Run.Status.QUEUED, "", None
            run.version += 1
            run.save(update_fields=["status", "lease_owner", "lease_expires_at", "version", "updated_at"])
            _enqueue_execution(run.pk)
            _announce_run(run)
            reclaimed.append(run.pk)
    return reclaimed


def requeue_stale_runs(older_than_seconds: float, limit: int = 500) -> list[int]:
    """Beat: enqueue again the runs that sat queued longer than `older_than_seconds` and have no execute_run
    message in the broker's queue (it was never sent, or a worker took it and died). A run still waiting
    behind a backlog is left alone; each one re-sent has its updated_at touched, so the next beat waits
    another interval before sending it again."""
    from agentops.lib.broker import runs_waiting_in_queue

    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    candidates = list(
        Run.objects.filter(status=Run.Status.QUEUED, updated_at__lt=cutoff)
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    if not candidates:
        return []
    waiting = runs_waiting_in_queue()
    if waiting is None:  # the broker is away: nothing can be sent now; the next beat tries again
        return []
    with transaction.atomic():
        stale = list(
            Run.objects.select_for_update(skip_locked=True)
            .filter(pk__in=set(candidates) - waiting, status=Run.Status.QUEUED, updated_at__lt=cutoff)
            .values_list("pk", flat=True)
        )
        Run.objects.filter(pk__in=stale).update(updated_at=timezone.now())
    for run_pk in stale:
        log.warning("run.requeued", run_id=run_pk, queued_longer_than=older_than_seconds)
        send_execution(run_pk)
    return stale


def record_effect(idempotency_key: str, tool: str, payload: dict) -> tuple[ToolEffect, bool]:
    """Exactly-once side effect: the first call with a key records it; later calls find it."""
    with transaction.atomic():
        return ToolEffect.objects.get_or_create(
            idempotency_key=idempotency_key, defaults={"tool": tool, "payload": payload}
        )
