"""A run from start to finish: start (idempotently), claim and lease, suspend for a human, resume after the
decision, hand back, retry, cancel, and the end states. Every change is announced live after commit, and an
execution is enqueued by task name after commit (agentops.execute_run), never by importing the task."""

from __future__ import annotations

from datetime import timedelta

import structlog
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from opentelemetry import propagate, trace

from agentops.lib import live, queue
from agentops.runs import ports
from agentops.runs.models import Agent, Run, Step
from agentops.runtime.interruptions import LeaseLost

log = structlog.get_logger("agentops.runs.actions")

EXECUTE_RUN = "agentops.execute_run"


class AgentDisabled(ValueError):
    """The run's agent is disabled (the Agents screen): no run of it starts, and a queued one that never
    started is failed instead of executed."""

    def __init__(self, agent: str) -> None:
        super().__init__(f"agent {agent} is disabled; enable it on the Agents screen to run it")
        self.agent = agent


# --- shared by the topic modules of this package ----------------------------------------------------
def announce_run(run: Run) -> None:
    live.publish(f"run.{run.pk}", "run.changed", {"run": run.pk, "status": run.status})
    live.publish("runs", "run.changed", {"run": run.pk, "status": run.status})


def announce_step(run_pk: int, seq: int, status: str) -> None:
    live.publish(f"run.{run_pk}", "step.changed", {"run": run_pk, "seq": seq, "status": status})


def enqueue_execution(run_pk: int, *, countdown: float = 0) -> None:
    """Send the run's execute_run message once the current transaction commits."""
    transaction.on_commit(lambda: send_execution(run_pk, countdown=countdown))


def send_execution(run_pk: int, *, countdown: float = 0) -> bool:
    """Put the run's execute_run message on the broker. With the broker away the committed run stays queued
    and beat enqueues it again (recovery.requeue_stale_runs), so the caller still gets its answer."""
    try:
        if countdown:
            queue.send_now(EXECUTE_RUN, run_pk, countdown=countdown)
        else:
            queue.send_now(EXECUTE_RUN, run_pk)
    except Exception:
        log.warning("run.enqueue_failed", run_id=run_pk, exc_info=True)
        return False
    return True


def locked_own_run(run_pk: int, worker: str) -> Run:
    """Lock the run row (only the columns a journal write checks) and make sure we still hold its lease."""
    run = (
        Run.objects.select_for_update()
        .only("id", "agent_id", "lease_owner", "status", "cancel_requested")
        .filter(pk=run_pk)
        .first()
    )
    if run is None or run.lease_owner != worker or run.status != Run.Status.RUNNING:
        raise LeaseLost(f"run {run_pk} is no longer leased to {worker}")
    return run


def finish(
    run: Run, status: str, *, output=None, error: str = "", error_class: str = "", active_seconds: float | None = None
) -> None:
    """Record how an execution ended (the lease is released) and announce it."""
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
    announce_run(run)


# --- starting and executing -------------------------------------------------------------------------
@transaction.atomic
def start_run(agent: Agent, input_data, *, session_id: str = "", idempotency_key: str = "") -> tuple[Run, bool]:
    """Create a queued run and enqueue it after commit. With an idempotency key, a second call returns
    the first run (created=False) instead of starting another. A disabled agent's run raises AgentDisabled."""
    if not agent.enabled:
        raise AgentDisabled(agent.name)
    if idempotency_key:
        existing = Run.objects.filter(agent=agent, idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing, False
    try:
        # A concurrent identical request may insert first: the unique constraint (agent, idempotency_key)
        # makes this insert wait for it and fail, and then the winner's run is the answer.
        with transaction.atomic():
            run = Run.objects.create(
                agent=agent,
                input=input_data,
                session_id=session_id,
                idempotency_key=idempotency_key,
                trace_context=current_trace_context(),
            )
    except IntegrityError:
        if not idempotency_key:
            raise
        return Run.objects.get(agent=agent, idempotency_key=idempotency_key), False
    enqueue_execution(run.pk)
    announce_run(run)
    return run, True


def claim_run(run_pk: int, worker: str, lease_seconds: float) -> Run | None:
    """Take a queued run (or one whose lease expired) for this worker. None when another worker has it
    or it moved on (a duplicate delivery exits quietly).

    The usual case is one statement (an UPDATE that returns the run and its agent); a run that is not simply
    claimable (taken, cancelled, its agent disabled) goes the locking way, which says why."""
    now = timezone.now()
    params = {
        "run": run_pk,
        "worker": worker,
        "now": now,
        "expires": now + timedelta(seconds=lease_seconds),
        "running": Run.Status.RUNNING,
        "queued": Run.Status.QUEUED,
    }
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, params)
        row = cursor.fetchone()
        columns = [column.name for column in cursor.description[2:]] if row is not None else []
    if row is None:
        return _claim_locked(run_pk, worker, lease_seconds)
    by_column = dict(zip(columns, row[2:], strict=True))  # r.* comes in the table's order, not the model's
    values = [
        f.from_db_value(by_column[f.column], None, connection) if hasattr(f, "from_db_value") else by_column[f.column]
        for f in Run._meta.concrete_fields
    ]  # what the ORM's converters do (JSON columns arrive as text)
    run = Run.from_db("default", _RUN_FIELDS, values)
    run.agent = Agent.from_db("default", ["id", "name", "enabled"], [run.agent_id, row[0], row[1]])
    announce_run(run)
    return run


_RUN_FIELDS = [f.attname for f in Run._meta.concrete_fields]
# One statement claims a run that simply is claimable, and returns it with its agent's name (the agent's other
# fields load if asked for).
_CLAIM_SQL = """
UPDATE agentops_run r SET status = %(running)s, lease_owner = %(worker)s, lease_expires_at = %(expires)s,
    executions = r.executions + 1, started_at = COALESCE(r.started_at, %(now)s), version = r.version + 1,
    updated_at = %(now)s
FROM agentops_agent a
WHERE r.id = %(run)s AND a.id = r.agent_id AND NOT r.cancel_requested AND (a.enabled OR r.executions > 0)
    AND (r.status = %(queued)s OR (r.status = %(running)s AND (r.lease_expires_at IS NULL
    OR r.lease_expires_at < %(now)s)))
RETURNING a.name, a.enabled, r.*
"""


@transaction.atomic
def _claim_locked(run_pk: int, worker: str, lease_seconds: float) -> Run | None:
    run = Run.objects.select_for_update().select_related("agent").filter(pk=run_pk).first()
    if run is None:
        return None
    now = timezone.now()
    lease_expired = run.status == Run.Status.RUNNING and (run.lease_expires_at is None or run.lease_expires_at < now)
    if run.status != Run.Status.QUEUED and not lease_expired:
        return None
    if run.cancel_requested:
        finish(run, Run.Status.CANCELLED, error="cancelled before it started")
        return None
    if not run.agent.enabled and run.executions == 0:  # queued before its agent was disabled
        finish(run, Run.Status.FAILED, error=str(AgentDisabled(run.agent.name)), error_class="AgentDisabled")
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
    announce_run(run)
    return run


def record_trace_id(run_pk: int, trace_id: str, trace_context: dict | None = None) -> None:
    """The trace of the run's first execution, and the context (its invoke_agent span) every later execution
    of the run continues, so that all of them are one trace."""
    update = {"trace_id": trace_id} if trace_context is None else {"trace_id": trace_id, "trace_context": trace_context}
    Run.objects.filter(pk=run_pk, trace_id="").update(**update)


def current_trace_context() -> dict:
    """The W3C trace context of the current span (the API request's, which continues the caller's
    ``traceparent``), as a carrier to store; empty when no span is recording."""
    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {key: value for key, value in carrier.items() if key in ("traceparent", "tracestate")}


def renew_lease(run_pk: int, worker: str, lease_seconds: float) -> tuple[bool, bool]:
    """Heartbeat: (still ours, cancel requested)."""
    updated = Run.objects.filter(pk=run_pk, lease_owner=worker, status=Run.Status.RUNNING).update(
        lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds)
    )
    cancel = Run.objects.filter(pk=run_pk, cancel_requested=True).exists()
    return updated == 1, cancel


# --- how an execution ends --------------------------------------------------------------------------
@transaction.atomic
def suspend_run(run_pk: int, worker: str, active_seconds: float) -> None:
    """Release the worker: the run waits for a human decision (which re-enqueues it). A decision that
    arrived while this execution was still suspending found the run running and did not re-enqueue
    it, so in that case the run is queued again at once."""
    run = locked_own_run(run_pk, worker)
    if Step.objects.filter(run=run, status=Step.Status.DECIDED).exists():
        finish(run, Run.Status.QUEUED, active_seconds=active_seconds)
        enqueue_execution(run.pk)
        return
    finish(run, Run.Status.WAITING_HUMAN, active_seconds=active_seconds)


@transaction.atomic
def release_run(run_pk: int, worker: str, active_seconds: float) -> None:
    """Hand an interrupted execution's run back to the queue (PostgreSQL went away mid-run): it executes again
    from its journal, its completed steps replayed. The pause before that grows with the run's executions (2 s,
    4 s, ... at most a minute), so a store that keeps failing cannot spin a worker."""
    run = locked_own_run(run_pk, worker)
    executions = Run.objects.values_list("executions", flat=True).get(pk=run_pk)
    finish(run, Run.Status.QUEUED, active_seconds=active_seconds)
    enqueue_execution(run.pk, countdown=min(2.0**executions, 60.0))


def complete_run(run_pk: int, worker: str, output, active_seconds: float) -> None:
    """The run succeeded: one statement, checked against our lease."""
    now = timezone.now()
    done = Run.objects.filter(pk=run_pk, lease_owner=worker, status=Run.Status.RUNNING).update(
        status=Run.Status.SUCCEEDED,
        output=output,
        error="",
        error_class="",
        lease_owner="",
        lease_expires_at=None,
        active_seconds=active_seconds,
        finished_at=now,
        version=F("version") + 1,
        updated_at=now,
    )
    if not done:
        raise LeaseLost(f"run {run_pk} is no longer leased to {worker}")
    announce_run(Run(pk=run_pk, status=Run.Status.SUCCEEDED))


@transaction.atomic
def fail_run(run_pk: int, worker: str, *, error_class: str, error: str, active_seconds: float) -> None:
    run = locked_own_run(run_pk, worker)
    finish(run, Run.Status.FAILED, error=error, error_class=error_class, active_seconds=active_seconds)


@transaction.atomic
def finish_cancelled(run_pk: int, worker: str, active_seconds: float) -> None:
    run = locked_own_run(run_pk, worker)
    finish(run, Run.Status.CANCELLED, error="cancelled while running", active_seconds=active_seconds)


# --- what people do to a run ------------------------------------------------------------------------
@transaction.atomic
def cancel_run(run_pk: int) -> Run:
    """Cancel at once when no worker holds the run; otherwise ask the worker (it stops before its next step)."""
    run = Run.objects.select_for_update().get(pk=run_pk)
    if run.is_terminal:
        return run
    if run.status == Run.Status.RUNNING:
        run.cancel_requested = True
        run.save(update_fields=["cancel_requested", "updated_at"])
        announce_run(run)
    else:
        finish(run, Run.Status.CANCELLED, error="cancelled")
        ports.current().escalations.withdraw_for_run(run.pk, why="the run was cancelled")
    return run


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
        enqueue_execution(run.pk)
    announce_step(run.pk, step.seq, step.status)
    announce_run(run)
    return step


@transaction.atomic
def retry_run(run_pk: int) -> Run:
    """Run a failed run again from its last checkpoint: completed steps replay, the failed one re-runs,
    and the request timeout starts afresh."""
    run = Run.objects.select_for_update(of=("self",)).select_related("agent").get(pk=run_pk)
    if run.status != Run.Status.FAILED:
        raise ValueError(f"only a failed run can be retried; run {run_pk} is {run.status}")
    if not run.agent.enabled:
        raise AgentDisabled(run.agent.name)
    run.status = Run.Status.QUEUED
    run.error, run.error_class, run.finished_at, run.active_seconds = "", "", None, 0.0
    run.version += 1
    run.save()
    enqueue_execution(run.pk)
    announce_run(run)
    return run
