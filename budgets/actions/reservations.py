"""Reserve before a call (all or nothing across every budget that applies), give a reservation back
(release), and reclaim the ones whose caller died before settling. Settling is in ledger.py."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from agentops.observability import metrics
from agentops.runtime.protocols import BudgetExceeded, BudgetUnavailable
from budgets.actions.alerts import alert_exhausted
from budgets.actions.counters import (
    APPLY_TO_COUNTERS,
    ENSURE_COUNTERS,
    STORE_ERRORS,
    CounterRow,
    fail_closed,
    lock_counters_by_id,
    prepared_value,
    publish_budgets,
)
from budgets.actions.directory import (
    Caller,
    Directory,
    applicable_among,
    current_directory,
    describe,
    directory_to_hold,
    read_directory,
)
from budgets.actions.periods import period_start
from budgets.actions.prices import cost_of
from budgets.models import Budget, Reservation

log = structlog.get_logger(__name__)

# Lock the counters of every key in id order, check every hard limit, and hold the estimate on all of them
# (and record the reservation) or on none, in ONE statement (the PL/pgSQL function of migration 0006): in
# autocommit the row locks are held inside PostgreSQL for one statement, never across a client round
# trip. It returns {"id": reservation or null, "complete": false when a counter row does not exist yet,
# "rows": every locked counter with the values checked, so a refusal can name the budget}.
_HOLD = """
SELECT budgets_hold(%(b)s::bigint[], %(s)s::text[], %(p)s::timestamptz[], %(hard)s::boolean[],
                    %(lt)s::bigint[], %(lu)s::numeric[], %(n)s::integer, %(tokens)s::bigint, %(usd)s::numeric,
                    %(agent)s::text, %(run_id)s::bigint, %(session_id)s::text, %(model)s::text,
                    %(operation)s::text, %(expires_at)s::timestamptz, %(now)s::timestamptz, %(version)s::bigint)::text
"""
# The hold found the directory version moved since this process read its copy (migration 0010).
_STALE = object()


def _refusal(budget: Budget, message: str) -> BudgetExceeded:
    metrics.BUDGET_REJECTIONS.labels(scope=budget.scope).inc()
    return BudgetExceeded(
        budget.name,
        message,
        cheaper_model=budget.downgrade_model or None,
        escalate=budget.on_block == Budget.OnBlock.ESCALATE,
    )


def reserve(
    meta: Mapping[str, Any], *, lease_seconds: float | None = None, now: dt.datetime | None = None
) -> int | None:
    """Hold the estimate against every budget that applies, all or nothing; return the reservation id
    (None when no budget applies). Raises ``BudgetExceeded`` naming the budget that blocks, or
    ``BudgetUnavailable`` when the store cannot be reached. ``now`` (default: the current time) picks the
    period and the price."""
    try:
        return _reserve(meta, lease_seconds, now)
    except STORE_ERRORS as exc:
        raise fail_closed(exc) from exc


def _reserve(meta: Mapping[str, Any], lease_seconds: float | None, now: dt.datetime | None = None) -> int | None:
    agent, models = Caller.from_meta(meta).agent, _models(meta)
    if now is not None:  # a reservation dated in the past or future (tests, backfills) reads the prices of that time
        return _reserve_with(read_directory(agent, models, now), None, meta, lease_seconds, now)
    now = timezone.now()
    directory, version = directory_to_hold(agent, models)
    try:
        held = _reserve_with(directory, version, meta, lease_seconds, now)
    except BudgetExceeded:  # maybe refused by a copy no hold checked (a per-call limit): refuse if it is current
        fresh, fresh_version = current_directory(agent, models)
        if fresh_version == version:
            raise
        held = _reserve_with(fresh, fresh_version, meta, lease_seconds, now)
    if held is None:  # no hold, so no check of the copy by PostgreSQL: ask Redis whether it is current
        fresh, fresh_version = current_directory(agent, models)
        if fresh_version != version:
            held = _reserve_with(fresh, fresh_version, meta, lease_seconds, now)
    if held is _STALE:  # the hold saw a budget, price or team change: read again, hold again
        directory, version = directory_to_hold(agent, models, reread=True)
        held = _reserve_with(directory, version, meta, lease_seconds, now)
    if held is _STALE:
        raise BudgetUnavailable("the budgets changed while reserving; try again")
    return held


def _models(meta: Mapping[str, Any]) -> list[str]:
    """Priced at the dearest model that may answer on this reservation (the guard lists its fallback chain)."""
    return [str(meta.get("model") or ""), *(str(m) for m in (meta.get("models") or ()) if m)]


def _reserve_with(
    directory: Directory, version: int | None, meta: Mapping[str, Any], lease_seconds: float | None, now: dt.datetime
) -> Any:
    """Reserve with this copy of the directory: the reservation id, None when no budget applies, or _STALE."""
    caller = Caller.from_meta(meta)
    operation = str(meta.get("operation") or "")
    model = str(meta.get("model") or "")
    est_in = max(int(meta.get("estimated_input_tokens") or 0), 0)
    est_out = max(int(meta.get("estimated_output_tokens") or 0), 0)
    tokens = max(int(meta.get("estimated_tokens") or est_in + est_out), 0)
    every_budget, team, prices = directory
    budgets = applicable_among(every_budget, team, caller)
    for budget, subject in budgets:
        per_call = (budget.operation_limits or {}).get(operation)
        if per_call is not None and tokens > int(per_call):
            raise _refusal(
                budget,
                f"{describe(budget, subject)} allows at most {per_call} tokens per {operation} call; "
                f"this call would use up to {tokens}",
            )
    limited = [(b, s) for b, s in budgets if b.limit_tokens is not None or b.limit_usd is not None]
    if not limited:
        return None
    # Tokens given only as a total (not split into input and output) are priced as output, the dearer kind.
    unsplit = max(tokens - est_in - est_out, 0)
    usd = max(cost_of(price, est_in, est_out + unsplit) for price in prices.values())
    keys = [(b, s, period_start(b, now)) for b, s in limited]
    by_key = {(b.id, s): b for b, s, _ in keys}
    lease = lease_seconds if lease_seconds is not None else settings.BUDGET_RESERVATION_LEASE_SECONDS
    params = {
        "b": [b.id for b, _, _ in keys],
        "s": [s for _, s, _ in keys],
        "p": [p for _, _, p in keys],
        "hard": [b.hard_stop for b, _, _ in keys],
        "lt": [b.limit_tokens for b, _, _ in keys],
        "lu": [b.limit_usd for b, _, _ in keys],
        "n": len(keys),
        "tokens": tokens,
        "usd": usd,
        "agent": caller.agent[:80],
        "run_id": caller.run_id,
        "session_id": caller.session_id[:200],
        "model": model[:120],
        "operation": operation[:100],
        "expires_at": now + dt.timedelta(seconds=lease),
        "now": now,
        "version": version,
    }
    outcome = _hold(params)
    if outcome.get("stale"):
        return _STALE
    if outcome["id"] is not None:
        return outcome["id"]
    if not outcome["complete"]:  # a counter of this period does not exist yet: create, then hold
        with connection.cursor() as cursor:
            cursor.execute(ENSURE_COUNTERS, (params["b"], params["s"], params["p"]))
        outcome = _hold(params)
        if outcome.get("stale"):
            return _STALE
        if outcome["id"] is not None:
            return outcome["id"]
    counters = [
        CounterRow(c, b, subject, dt.datetime.fromisoformat(start), int(st), Decimal(su), int(rt), Decimal(ru))
        for c, b, subject, start, st, su, rt, ru in outcome["rows"]
    ]
    for counter in counters:
        budget = by_key[(counter.budget_id, counter.subject)]
        refusal = _refusal_if_no_room(budget, counter, tokens, usd) if budget.hard_stop else None
        if refusal is not None:
            alert_exhausted(budget, counter)
            raise refusal
    raise BudgetUnavailable("the budget counters changed while reserving; try again")


def _hold(params: dict) -> dict:
    return json.loads(prepared_value(_HOLD, params), parse_float=Decimal)


def _refusal_if_no_room(budget: Budget, counter: CounterRow, tokens: int, usd: Decimal) -> BudgetExceeded | None:
    """The refusal if the estimate does not fit under the hard limit (spent + reserved + estimate)."""
    where = describe(budget, counter.subject)
    if budget.limit_tokens is not None:
        left = budget.limit_tokens - counter.spent_tokens - counter.reserved_tokens
        if tokens > left:
            return _refusal(
                budget,
                f"{where} has {max(left, 0)} of {budget.limit_tokens} tokens left; this call needs up to {tokens}",
            )
    if budget.limit_usd is not None:
        left_usd = budget.limit_usd - counter.spent_usd - counter.reserved_usd
        if usd > left_usd:
            return _refusal(
                budget,
                f"{where} has ${max(left_usd, Decimal(0)):.4f} of ${budget.limit_usd} left; "
                f"this call may cost up to ${usd:.4f}",
            )
    return None


def release(reservation_id: int) -> bool:
    """Give a held reservation back in full (the call failed or never happened). False if it was not held."""
    try:
        with transaction.atomic():
            reservation = Reservation.objects.select_for_update().filter(pk=reservation_id).first()
            if reservation is None or reservation.status != Reservation.Status.HELD:
                return False
            _give_back(reservation, Reservation.Status.RELEASED)
            return True
    except STORE_ERRORS as exc:
        raise fail_closed(exc) from exc


def _give_back(reservation: Reservation, status: str) -> None:
    with connection.cursor() as cursor:
        lock_counters_by_id(cursor, reservation.counter_ids)
        cursor.execute(
            APPLY_TO_COUNTERS,
            {
                "spent_tokens": 0,
                "spent_usd": Decimal(0),
                "held_tokens": reservation.tokens,
                "held_usd": reservation.usd,
                "held_count": 1,
                "ids": list(reservation.counter_ids),
            },
        )
    reservation.status = status
    reservation.closed_at = timezone.now()
    reservation.save(update_fields=["status", "closed_at"])


def reclaim_expired(limit: int = 500) -> int:
    """Beat: give back reservations whose lease ran out (the caller died before settling)."""
    reclaimed = 0
    with transaction.atomic():
        expired = list(
            Reservation.objects.select_for_update(skip_locked=True)
            .filter(status=Reservation.Status.HELD, expires_at__lt=timezone.now())
            .order_by("id")[:limit]
        )
        if expired:  # every counter first, in id order as reserve locks them: no lock-order deadlock with it
            with connection.cursor() as cursor:
                lock_counters_by_id(cursor, sorted({i for r in expired for i in r.counter_ids}))
        for reservation in expired:
            _give_back(reservation, Reservation.Status.EXPIRED)
            reclaimed += 1
    if reclaimed:
        log.warning("budget.reservations_reclaimed", count=reclaimed)
        publish_budgets()
    return reclaimed
