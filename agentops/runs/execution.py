"""Executes one run on a Celery worker: claim the lease, keep it (leases.keeper), run the agent function with a
journaled ctx, and record how the execution ended (succeeded / waiting_human / failed / cancelled)."""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from django.db.models import Q
from django.utils import timezone
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from agentops.config.source import config_source
from agentops.lib import activity
from agentops.lib.db import discard_connection
from agentops.observability import genai, metrics
from agentops.runs import leases, ports
from agentops.runs.actions import journal, lifecycle
from agentops.runs.models import Step
from agentops.runs.registry import load_agents
from agentops.runtime.context import RecordedStep, RunContext, RunSettings, StepMeta
from agentops.runtime.errors import FallbackExhausted, ProviderError, classify_any, describe
from agentops.runtime.interruptions import (
    LeaseLost,
    NondeterminismError,
    PhaseTimeout,
    RequestTimeout,
    RunCancelled,
    Suspend,
    ToolRejected,
)
from agentops.runtime.protocols import BudgetUnavailable

log = structlog.get_logger("agentops.runs")
tracer = trace.get_tracer("agentops.runs")

REPLAYABLE = {"completed", "skipped", "waiting_human", "decided"}
# PostgreSQL (the journal, the budget store) went away mid-execution: the run is not at fault, so it is handed
# back to the queue and executes again from its journal instead of failing.
INTERRUPTIONS = (OperationalError, InterfaceError, BudgetUnavailable)


class ClaimUnavailable(Exception):
    """The run could not be claimed because PostgreSQL is away (the task tries again)."""


@dataclass
class _InFlight:
    """The step this execution is working on, not yet written (DbJournal.begin)."""

    seq: int
    kind: str
    name: str
    phase: str | None
    arguments: Any
    started_at: datetime
    started: float  # monotonic
    counted: bool = False  # marked begun (the lease keeper's deferred mark)


class DbJournal:
    """The StepJournal of one execution: steps in PostgreSQL, every write checked against our lease.

    A step is written once, when it ends, in one statement (journal.step_finish). Marked begun before its work
    (journal.step_begin) are only phases, side-effecting tools, and — by the lease keeper — a step still in
    flight after leases.MARK_AFTER seconds: a crash mid-step re-executes that one step either way, and a
    side effect is found by its idempotency key."""

    def __init__(self, run_pk: int, worker: str, *, first_execution: bool = False):
        self.run_pk, self.worker = run_pk, worker
        self.cancel_seen = False  # the last journal write found the run asked to stop
        self._lock = threading.Lock()  # the run's thread and the lease keeper's deferred mark
        self._in_flight: _InFlight | None = None
        if first_execution:  # no execution before this one could have journaled a step
            self._recorded: dict[int, RecordedStep] = {}
            return
        # A phase still "running" was interrupted by a suspension or a crash: it resumes without a
        # second begin (its inner steps replay on their own).
        steps = Step.objects.filter(run_id=run_pk).filter(
            Q(status__in=REPLAYABLE) | Q(kind="phase", status="running") | Q(decision__isnull=False)
        )
        self._recorded = {
            s.seq: RecordedStep(
                s.seq, s.kind, s.name, _replay_status(s), s.result, s.decision, s.end_seq, elapsed=_phase_used(s)
            )
            for s in steps
        }

    def replay(self, seq: int) -> RecordedStep | None:
        return self._recorded.get(seq)

    def begin(self, seq, kind, name, phase, args, *, durable: bool = False) -> None:
        arguments = _jsonable(args)
        if durable or kind == "phase":
            journal.step_begin(self.run_pk, self.worker, seq, kind, name, phase, arguments)
            return
        with self._lock:
            self._in_flight = _InFlight(seq, kind, name, phase, arguments, timezone.now(), time.monotonic())

    def mark_in_flight(self, older_than: float) -> None:
        """The lease keeper: mark begun the step in flight for `older_than` seconds or more (once)."""
        with self._lock:
            step = self._in_flight
            if step is None or step.counted or time.monotonic() - step.started < older_than:
                return
            try:
                journal.step_begin(self.run_pk, self.worker, step.seq, step.kind, step.name, step.phase, step.arguments)
            except (RunCancelled, LeaseLost):  # the run stops at its next step (or its lease is gone)
                return
            step.counted = True

    def _finish(self, seq: int, status: str, **fields) -> None:
        with self._lock:
            step, self._in_flight = self._in_flight, None
            if step is not None and step.seq == seq:
                fields.update(
                    kind=step.kind,
                    name=step.name,
                    phase=step.phase,
                    arguments=step.arguments,
                    started_at=step.started_at,
                    counted=step.counted,
                )
            self.cancel_seen = journal.step_finish(self.run_pk, self.worker, seq, status, **fields)

    def complete(self, seq, result, meta: StepMeta, *, end_seq=None) -> None:
        self._finish(seq, "completed", result=_jsonable(result), meta=meta, end_seq=end_seq)

    def skip(self, seq, reason, meta: StepMeta, *, end_seq=None) -> None:
        self._finish(seq, "skipped", meta=meta, error=reason, end_seq=end_seq)

    def fail(self, seq, error_class, message, meta: StepMeta) -> None:
        self._finish(seq, "failed", meta=meta, error_class=error_class, error=message)

    def pause(self, seq, meta: StepMeta) -> None:
        journal.step_pause(self.run_pk, self.worker, seq, meta.duration_ms)

    def wait_human(self, seq, *, reason, priority, payload, meta, step=None) -> Any:
        began = False
        with self._lock:
            flight, self._in_flight = self._in_flight, None
        if step is None and flight is not None and flight.seq == seq:  # an llm step whose calls all failed
            step, began = (flight.kind, flight.name, flight.phase, flight.arguments), not flight.counted
        return journal.step_wait_human(
            self.run_pk,
            self.worker,
            seq,
            reason=reason,
            priority=priority,
            payload=_jsonable(payload),
            meta=meta,
            step=_jsonable(step) if step else None,
            began=began,
        )


def _replay_status(step) -> str:
    """A step a human decided whose work then began (and was interrupted: status running) or failed replays as
    decided: the decision is carried out again, the human is not asked twice."""
    if step.decision is not None and step.status in ("running", "failed"):
        return "decided"
    return step.status


def _phase_used(step) -> float:
    """Active seconds an open phase used before its run was suspended (recorded by ``DbJournal.pause``)."""
    if step.kind == "phase" and step.status == Step.Status.RUNNING and step.duration_ms:
        return step.duration_ms / 1000
    return 0.0


def _jsonable(value: Any) -> Any:
    """JSON round trip: what the journal stores is exactly what a replay returns."""
    return json.loads(json.dumps(value, default=str))


def hand_back(run_pk: int, worker: str, active_seconds: float, *, patience: float) -> bool:
    """Queue an interrupted run again, waiting up to `patience` seconds for PostgreSQL to come back. When it
    does not, the run keeps its lease until it expires and beat reclaims it: nothing is lost either way."""
    deadline = time.monotonic() + patience
    while True:
        discard_connection()
        try:
            lifecycle.release_run(run_pk, worker, active_seconds)
            return True
        except LeaseLost:
            return False
        except (OperationalError, InterfaceError):
            if time.monotonic() > deadline:
                log.warning("run.hand_back_failed", run_id=run_pk)
                return False
            time.sleep(0.5)


def error_class_name(exc: BaseException) -> str:
    """The error class a failed run shows: the run machinery's own failures by name (``RequestTimeout``,
    ``AllFallbacksFailed`` …), everything else by the taxonomy (errors.classify_any): a tool's
    ``OSError(ENOSPC)`` is ``ResourceExhausted``, its ``ValueError`` a ``LogicError``."""
    if isinstance(exc, ProviderError):
        return str(exc.error_class)
    if isinstance(exc, FallbackExhausted):
        return "AllFallbacksFailed"
    if describe(type(exc).__name__) is not None:
        return type(exc).__name__
    return classify_any(exc).error_class.value


def failure_fields(exc: BaseException) -> dict[str, str]:
    """The log fields of a failed run: its error class and the taxonomy's category."""
    found = classify_any(exc)
    return {"error_class": error_class_name(exc), "error_category": found.category.value, "reason": found.reason}


@functools.cache
def _host() -> str:
    return socket.gethostname()  # once per process: a system call every run showed in the profile


def worker_identity() -> str:
    return f"{_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def run_settings() -> RunSettings:
    timeouts = config_source().get().timeouts
    return RunSettings(
        request_timeout=timeouts.request,
        tool_timeout=timeouts.tool,
        phase_timeouts=dict(timeouts.steps),
        critical_phases=dict(timeouts.critical),
    )


def _run_context(run, worker: str, lease: leases.Lease, journal_: DbJournal) -> RunContext:
    installed = ports.current()
    return RunContext(
        run.pk,
        journal=journal_,
        deps=installed.guard_deps(),
        policy=installed.escalations.tool_policy(run.agent.name),
        settings=run_settings(),
        active_seconds=run.active_seconds,
        session_id=run.session_id,
        agent=run.agent.name,
        cancelled=lambda: lease.cancel_requested or journal_.cancel_seen,
        tool_cache=installed.tool_cache(),
        caches=installed.agent_caches() if installed.agent_caches is not None else None,
    )


def _invoke_agent_attributes(run) -> dict[str, Any]:
    """``invoke_agent``'s attributes (OpenTelemetry GenAI, in-process agent: kind INTERNAL)."""
    attributes: dict[str, Any] = {
        genai.OPERATION: "invoke_agent",
        genai.PROVIDER: genai.AGENTOPS_PROVIDER,
        genai.AGENT_NAME: run.agent.name,
        genai.AGENT_ID: str(run.agent_id),
        "agentops.run.id": run.pk,
        "agentops.run.execution": run.executions,
    }
    if run.session_id:
        attributes[genai.CONVERSATION] = run.session_id
    return attributes


def execute_run(run_pk: int) -> str:
    """Claim and execute run `run_pk`; returns how this execution ended."""
    close_old_connections()
    worker = worker_identity()
    lease = settings.RUN_LEASE_SECONDS
    try:
        run = lifecycle.claim_run(run_pk, worker, lease)
    except (OperationalError, InterfaceError) as exc:
        discard_connection()
        raise ClaimUnavailable(f"claiming run {run_pk} failed: {exc}") from exc
    if run is None:
        return "not-claimable"
    structlog.contextvars.bind_contextvars(run_id=run.pk, agent=run.agent.name, session_id=run.session_id)
    try:
        spec = load_agents().get(run.agent.name)
    except Exception as exc:  # a broken agent module fails the run clearly instead of leaving it leased
        lifecycle.fail_run(
            run.pk,
            worker,
            error_class="AgentLoadError",
            active_seconds=run.active_seconds,
            error=f"loading agent modules failed: {exc!r}",
        )
        return "failed"
    if spec is None:
        lifecycle.fail_run(
            run.pk,
            worker,
            error_class="UnknownAgent",
            active_seconds=run.active_seconds,
            error=f"no agent function is registered under {run.agent.name!r}",
        )
        return "failed"
    started = time.monotonic()
    activity.touch(run.agent.name, run.session_id)
    outcome = "failed"
    failure: BaseException | None = None
    # Every execution of a run is one trace: the first continues the caller's context (a traceparent given
    # to POST /api/v1/runs) or starts the trace; the later ones (after a human decision, a crash) are children
    # of the first execution's invoke_agent span, whose context the run keeps.
    parent = propagate.extract(run.trace_context) if run.trace_context else None
    with tracer.start_as_current_span(
        f"invoke_agent {run.agent.name}",
        context=parent,
        kind=SpanKind.INTERNAL,
        attributes=_invoke_agent_attributes(run),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        structlog.contextvars.bind_contextvars(trace_id=trace_id)

        def active() -> float:
            return run.active_seconds + (time.monotonic() - started)

        # Everything after the lease is held is inside this try, so that it is always released: a lease kept by
        # an error would be renewed for a run nobody executes.
        held = leases.Lease(run.pk, worker, lease, seen=(run.agent.name, run.session_id))
        leases.keeper.keep(held)
        try:
            if not run.trace_id:
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                lifecycle.record_trace_id(run.pk, trace_id, carrier if span.get_span_context().is_valid else None)
            journal_ = DbJournal(run.pk, worker, first_execution=run.executions == 1)
            held.mark_in_flight = journal_.mark_in_flight
            ctx = _run_context(run, worker, held, journal_)
            output = spec.fn(ctx, run.input)
            lifecycle.complete_run(run.pk, worker, _jsonable(output), active())
            outcome = "succeeded"
        except Suspend as suspend:
            lifecycle.suspend_run(run.pk, worker, active())
            outcome = "waiting_human"
            log.info("run.suspended", step=suspend.seq, reason=suspend.reason)
        except LeaseLost:
            outcome = "lease-lost"
            log.warning("run.lease_lost")
        except INTERRUPTIONS as exc:
            log.warning("run.interrupted", error_class=type(exc).__name__, error=str(exc)[:500])
            outcome = "requeued" if hand_back(run.pk, worker, active(), patience=lease) else "interrupted"
        except RunCancelled:
            lifecycle.finish_cancelled(run.pk, worker, active())
            outcome = "cancelled"
        except (RequestTimeout, PhaseTimeout, NondeterminismError, ToolRejected) as exc:
            failure = exc
            log.warning("run.failed", **failure_fields(exc), error=str(exc)[:500])
            lifecycle.fail_run(run.pk, worker, error_class=type(exc).__name__, error=str(exc), active_seconds=active())
        except SoftTimeLimitExceeded as exc:
            failure = exc
            log.warning(
                "run.failed", error_class="RequestTimeout", error_category="network", reason="worker_time_limit"
            )
            lifecycle.fail_run(
                run.pk,
                worker,
                error_class="RequestTimeout",
                active_seconds=active(),
                error="the run exceeded its request timeout (worker time limit)",
            )
        except Exception as exc:
            failure = exc
            fields = failure_fields(exc)
            log.warning("run.failed", **fields, error=str(exc)[:500])
            try:
                lifecycle.fail_run(
                    run.pk, worker, error_class=fields["error_class"], error=str(exc), active_seconds=active()
                )
            except LeaseLost:
                outcome = "lease-lost"
        finally:
            leases.keeper.release(held)
            span.set_attribute("agentops.run.outcome", outcome)
            if outcome == "failed" and failure is not None:
                span.set_attribute(genai.ERROR_TYPE, error_class_name(failure))
                span.set_status(Status(StatusCode.ERROR, f"{type(failure).__name__}: {str(failure)[:500]}"))
    if outcome in ("succeeded", "failed", "cancelled"):
        metrics.REQUESTS.labels(session_type="run", success=str(outcome == "succeeded").lower()).inc()
    structlog.contextvars.unbind_contextvars("run_id", "agent", "session_id", "trace_id")
    log.info(
        "run.execution_ended", run_id=run.pk, outcome=outcome, duration_ms=round((time.monotonic() - started) * 1000, 1)
    )
    return outcome
