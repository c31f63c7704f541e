"""A run's step journal: a step is recorded once, when it ends (completed / skipped / failed, its tokens and
ledger cost added to the run), in one statement that also checks this worker's lease; the steps that need it
are marked begun first (phases, side-effecting tools, and a step still in flight after a moment, so a crash
mid-step is visible and counted); a step may wait for a human (an escalation opens in the review queue); and
tools' side effects are recorded exactly once. Every write checks that this worker still holds the run's lease.

Why one statement: a 4-step run used to pay two transactions per step (a locking read, the write, the commit,
twice); the journal is the hot path of every run, so each step now costs one round trip and one commit. A
step that is not marked begun and whose worker dies mid-step runs again from the top like any unfinished step
(at most that one step; side effects keep their idempotency keys), it is only not counted in ``executions``.
"""

from __future__ import annotations

import json
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from agentops.runs import ports
from agentops.runs.actions.lifecycle import announce_step, locked_own_run
from agentops.runs.models import Step, ToolEffect
from agentops.runtime.context import RunCancelled
from agentops.runtime.interruptions import LeaseLost

# The run row locked and checked against our lease, the step row written (inserted, or updated when an earlier
# execution or our begin mark left one), and for a step with tokens the run's totals, in one statement. The
# step's cost is what its ledger rows say (the budgets room's own SQL, handed in through the ports).
_OWN = """
WITH own AS (
    SELECT id, cancel_requested FROM agentops_run
    WHERE id = %(run)s AND lease_owner = %(worker)s AND status = 'running' FOR UPDATE
)"""
_INSERT = """, written AS (
    INSERT INTO agentops_step (
        run_id, seq, kind, name, phase, status, arguments, result, attempts, executions, error_class, error, hops,
        cache_hit, handler, model, duration_ms, input_tokens, output_tokens, cost_usd, idempotency_key, end_seq,
        started_at, finished_at
    )
    SELECT own.id, %(seq)s, %(kind)s, %(name)s, %(phase)s, %(status)s, %(arguments)s::jsonb, %(result)s::jsonb,
        %(attempts)s, 1, %(error_class)s, %(error)s, %(hops)s::jsonb, %(cache_hit)s, %(handler)s, %(model)s,
        %(duration_ms)s, %(input_tokens)s, %(output_tokens)s, COST, %(key)s, %(end_seq)s, %(started_at)s, %(now)s
    FROM own
    ON CONFLICT (run_id, seq) DO UPDATE SET
        status = EXCLUDED.status, result = EXCLUDED.result, attempts = EXCLUDED.attempts,
        error_class = EXCLUDED.error_class, error = EXCLUDED.error, hops = EXCLUDED.hops,
        cache_hit = EXCLUDED.cache_hit, handler = EXCLUDED.handler, model = EXCLUDED.model,
        duration_ms = EXCLUDED.duration_ms, input_tokens = EXCLUDED.input_tokens,
        output_tokens = EXCLUDED.output_tokens, cost_usd = EXCLUDED.cost_usd, end_seq = EXCLUDED.end_seq,
        finished_at = EXCLUDED.finished_at UNCOUNTED
    RETURNING cost_usd
)"""
# A step this execution did not mark begun is one more execution of it, and takes what a begin would have set.
_UNCOUNTED = """,
        executions = agentops_step.executions + 1, kind = EXCLUDED.kind, name = EXCLUDED.name,
        phase = EXCLUDED.phase, idempotency_key = EXCLUDED.idempotency_key,
        arguments = CASE WHEN EXCLUDED.arguments = '{}'::jsonb THEN agentops_step.arguments
            ELSE EXCLUDED.arguments END"""
_TOTALS = """, totals AS (
    UPDATE agentops_run SET input_tokens = agentops_run.input_tokens + %(input_tokens)s,
        output_tokens = agentops_run.output_tokens + %(output_tokens)s,
        cost_usd = agentops_run.cost_usd + (SELECT cost_usd FROM written)
    FROM own WHERE agentops_run.id = own.id
)"""
_CANCEL = " SELECT own.cancel_requested FROM own"
_BEGUN = """, written AS (
    INSERT INTO agentops_step (
        run_id, seq, kind, name, phase, status, arguments, result, attempts, executions, error_class, error, hops,
        cache_hit, handler, model, duration_ms, input_tokens, output_tokens, cost_usd, idempotency_key, end_seq,
        started_at, finished_at
    )
    SELECT own.id, %(seq)s, %(kind)s, %(name)s, %(phase)s, 'running', %(arguments)s::jsonb, NULL, 0, 1, '', '',
        '[]'::jsonb, false, '', '', 0, 0, 0, 0, %(key)s, NULL, %(now)s, NULL
    FROM own WHERE NOT own.cancel_requested
    ON CONFLICT (run_id, seq) DO UPDATE SET status = 'running', error = '', error_class = '', finished_at = NULL
        UNCOUNTED
    RETURNING 1
)"""
_BEGIN = _OWN + _BEGUN.replace("UNCOUNTED", _UNCOUNTED) + _CANCEL
_finish_statements: dict[tuple[bool, bool], str] = {}


def _finish_sql(counted: bool, tokens: bool) -> str:
    sql = _finish_statements.get((counted, tokens))
    if sql is None:
        cost = f"({ports.current().step_cost_sql})" if tokens else "0"
        written = _INSERT.replace("COST", cost).replace("UNCOUNTED", "" if counted else _UNCOUNTED)
        sql = _finish_statements[(counted, tokens)] = _OWN + written + (_TOTALS if tokens else "") + _CANCEL
    return sql


def _json(value) -> str | None:
    return None if value is None else json.dumps(value)


def _step_params(
    run_pk: int, worker: str, seq: int, kind: str, name: str, phase: str | None, arguments: dict | None
) -> dict:
    """What both journal statements bind: whose step it is, what it is, and its idempotency key."""
    return {
        "run": run_pk,
        "worker": worker,
        "seq": seq,
        "kind": kind,
        "name": name,
        "phase": phase or "",
        "arguments": json.dumps(arguments or {}),
        "key": f"run:{run_pk}:step:{seq}",
    }


def step_begin(run_pk: int, worker: str, seq: int, kind: str, name: str, phase: str | None, arguments: dict) -> None:
    """Journal: the step's work starts now (committed before the work, so a crash mid-step is visible and
    counted). For phases, side-effecting tools and steps still in flight after a moment (execution.DbJournal);
    one statement. Raises RunCancelled (nothing written) when the run was asked to stop."""
    params = {**_step_params(run_pk, worker, seq, kind, name, phase, arguments), "now": timezone.now()}
    with connection.cursor() as cursor:
        cursor.execute(_BEGIN, params)
        row = cursor.fetchone()
    if row is None:
        raise LeaseLost(f"run {run_pk} is no longer leased to {worker}")
    if row[0]:  # checked before every step that begins: cancelling never waits for a heartbeat
        raise RunCancelled(f"run {run_pk} was cancelled")
    announce_step(run_pk, seq, Step.Status.RUNNING)


def step_finish(
    run_pk: int,
    worker: str,
    seq: int,
    status: str,
    *,
    kind: str = "",
    name: str = "",
    phase: str | None = None,
    arguments: dict | None = None,
    started_at: datetime | None = None,
    counted: bool = True,
    result=None,
    meta=None,
    error_class: str = "",
    error: str = "",
    end_seq: int | None = None,
) -> bool:
    """Journal: the step's outcome (completed / skipped / failed) and its tokens added to the run, in one
    statement. ``counted``: this execution marked the step begun (step_begin); otherwise the row is written
    here (or an earlier execution's row updated) with ``kind``, ``name``, ``phase``, ``arguments`` and one more
    execution. Returns whether the run was asked to stop (the next step then does not start)."""
    tokens = bool(meta is not None and (meta.input_tokens or meta.output_tokens))
    now = timezone.now()
    params = {
        **_step_params(run_pk, worker, seq, kind, name, phase, arguments),
        "status": status,
        "result": _json(result),
        "attempts": meta.attempts if meta is not None else 0,
        "error_class": error_class or (meta.error_class if meta is not None and meta.error_class else ""),
        "error": error,
        "hops": json.dumps(meta.hops if meta is not None else []),
        "cache_hit": bool(meta is not None and meta.cache_hit),
        "handler": (meta.handler if meta is not None else "") or "",
        "model": (meta.model if meta is not None else "") or "",
        "duration_ms": meta.duration_ms if meta is not None else 0.0,
        "input_tokens": meta.input_tokens if meta is not None else 0,
        "output_tokens": meta.output_tokens if meta is not None else 0,
        "end_seq": end_seq,
        "started_at": started_at or now,
        "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(_finish_sql(counted, tokens), params)
        row = cursor.fetchone()
    if row is None:
        raise LeaseLost(f"run {run_pk} is no longer leased to {worker}")
    announce_step(run_pk, seq, status)
    return bool(row[0])


@transaction.atomic
def step_pause(run_pk: int, worker: str, seq: int, duration_ms: float) -> None:
    """Journal: a phase stays open while its run waits for a human; record the active time it used so far,
    so that the resumed run gives the phase only what is left of its timeout."""
    locked_own_run(run_pk, worker)
    Step.objects.filter(run_id=run_pk, seq=seq, status=Step.Status.RUNNING).update(duration_ms=duration_ms)


@transaction.atomic
def step_wait_human(
    run_pk: int,
    worker: str,
    seq: int,
    *,
    reason: str,
    priority: str,
    payload: dict,
    meta=None,
    step=None,
    began: bool = False,
):
    """The step needs a human: record what they must decide. Returns the escalation id (the review
    queue creates a real escalation here). `step` = (kind, name, phase, arguments) for a step whose row may
    not exist yet: a tool call held for review (its work has not begun), or, with ``began``, an llm step whose
    calls all failed before it was marked begun (one more execution of it)."""
    run = locked_own_run(run_pk, worker)
    if step is not None:
        kind, name, phase, arguments = step
        step, created = Step.objects.get_or_create(
            run=run,
            seq=seq,
            defaults={
                "kind": kind,
                "name": name,
                "phase": phase or "",
                "arguments": arguments,
                "executions": int(began),
                "idempotency_key": f"run:{run_pk}:step:{seq}",
            },
        )
        if began and not created:
            step.executions += 1
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
