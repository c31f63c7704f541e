"""A run's step journal: a step begins, ends (completed / skipped / failed, its tokens and ledger cost added to
the run) or waits for a human (an escalation opens in the review queue); and tools' side effects, recorded
exactly once. Every write checks that this worker still holds the run's lease."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agentops.runs import ports
from agentops.runs.actions.lifecycle import announce_step, locked_own_run
from agentops.runs.models import Run, Step, ToolEffect
from agentops.runtime.context import RunCancelled


@transaction.atomic
def step_begin(run_pk: int, worker: str, seq: int, kind: str, name: str, phase: str | None, arguments: dict) -> None:
    """Journal: the step's work starts now (committed first, so a crash mid-step is visible and counted).

    Hot path of every run: one locking read and one or two writes, no savepoint."""
    run = locked_own_run(run_pk, worker)
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
    announce_step(run_pk, seq, Step.Status.RUNNING)


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
    locked_own_run(run_pk, worker)
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
        # the ledger rows this step's calls wrote, priced when they were made
        cost = ports.current().step_cost(run_pk, seq)
        changes["cost_usd"] = cost
    Step.objects.filter(run_id=run_pk, seq=seq).update(**changes)
    if meta is not None and (meta.input_tokens or meta.output_tokens):
        Run.objects.filter(pk=run_pk).update(
            input_tokens=F("input_tokens") + meta.input_tokens,
            output_tokens=F("output_tokens") + meta.output_tokens,
            cost_usd=F("cost_usd") + cost,
        )
    announce_step(run_pk, seq, status)


@transaction.atomic
def step_pause(run_pk: int, worker: str, seq: int, duration_ms: float) -> None:
    """Journal: a phase stays open while its run waits for a human; record the active time it used so far,
    so that the resumed run gives the phase only what is left of its timeout."""
    locked_own_run(run_pk, worker)
    Step.objects.filter(run_id=run_pk, seq=seq, status=Step.Status.RUNNING).update(duration_ms=duration_ms)


@transaction.atomic
def step_wait_human(
    run_pk: int, worker: str, seq: int, *, reason: str, priority: str, payload: dict, meta=None, step=None
):
    """The step needs a human: record what they must decide. Returns the escalation id (the review
    queue creates a real escalation here). `step` = (kind, name, phase, arguments) for a step whose
    work has not begun (a tool call held for review)."""
    run = locked_own_run(run_pk, worker)
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
    escalation_id = ports.current().escalations.open_for_step(
        run, step, reason=reason, priority=priority, payload=payload
    )
    step.escalation_id = escalation_id
    step.arguments = {
        **(step.arguments or {}),
        "escalation": {"id": escalation_id, "reason": reason, "priority": priority},
    }
    step.save()
    announce_step(run.pk, step.seq, step.status)
    return escalation_id


def record_effect(idempotency_key: str, tool: str, payload: dict) -> tuple[ToolEffect, bool]:
    """Exactly-once side effect: the first call with a key records it; later calls find it."""
    with transaction.atomic():
        return ToolEffect.objects.get_or_create(
            idempotency_key=idempotency_key, defaults={"tool": tool, "payload": payload}
        )
