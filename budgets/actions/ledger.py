"""The usage ledger: settle a reservation with the actual usage, record a call that held none, settle
through a PostgreSQL outage (parked in Redis, applied by beat), and what a run step cost."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from agentops.lib.db import discard_connection
from agentops.lib.redis import runtime_redis
from agentops.observability import metrics
from agentops.runtime.protocols import BudgetUnavailable
from budgets.actions.alerts import after_spend
from budgets.actions.counters import (
    APPLY_TO_COUNTERS,
    STORE_ERRORS,
    fail_closed,
    lock_counters,
    lock_counters_by_id,
    prepared_value,
)
from budgets.actions.directory import Caller, applicable_budgets, int_or_none
from budgets.actions.periods import period_start
from budgets.actions.prices import cost_of, price_in_force, usage_price_names
from budgets.models import Budget, Reservation, UsageRecord

log = structlog.get_logger(__name__)

# Close a held reservation, swap its hold for the actual spend on its counters (locked in id order before
# any is updated), price the call from the table in force and write the ledger row, in ONE statement (the
# PL/pgSQL function of migration 0007, which prices at the most specific of the names given, then the
# reservation's model, then ``*``). It returns null when the reservation was not held (settled,
# released or reclaimed before: the general path decides), else {"record": the ledger row's columns in
# _USAGE_COLUMNS order, "counters": each counter's new spend with its budget's limits, for the alert check}.
_SETTLE = """
SELECT budgets_settle(%(id)s::bigint, %(now)s::timestamptz, %(spent)s::bigint, %(uncached)s::bigint,
                      %(cached_tokens)s::bigint, %(output)s::bigint, %(step)s::integer, %(model)s::text,
                      %(provider)s::text, %(operation)s::text, %(input)s::bigint, %(source)s::text,
                      %(price_names)s::text[])::text
"""
_USAGE_COLUMNS = [
    "id",
    "agent",
    "run_id",
    "step",
    "session_id",
    "model",
    "provider",
    "operation",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_usd",
    "price_id",
    "cached",
    "reservation_id",
    "source",
    "rolled_up",
    "created_at",
]


def settle(reservation_id: int, usage: Mapping[str, Any], *, now: dt.datetime | None = None) -> UsageRecord:
    """Replace the reservation's estimate by the actual usage and write the priced ledger row, in one
    transaction. A reservation already reclaimed still records its spend (the call did happen); a repeated
    settle returns the first one's ledger row and counts nothing again."""
    try:
        # The one-statement path needs the model that answered; without it the general path prices the call
        # at the reservation's model.
        if usage.get("model") and not (usage.get("cache_hit") or usage.get("cached")):
            record = _settle_held(reservation_id, usage, now or timezone.now())
            if record is not None:
                return record
        with transaction.atomic():
            reservation = Reservation.objects.select_for_update().get(pk=reservation_id)
            if reservation.status == Reservation.Status.SETTLED:  # a repeated settle (a retry): spend counts once
                done = UsageRecord.objects.filter(reservation_id=reservation.pk).order_by("id").first()
                if done is not None:
                    return done
            record = _apply_usage(usage, reservation=reservation, now=now)
    except STORE_ERRORS as exc:
        raise fail_closed(exc) from exc
    return record


# --- settling through a PostgreSQL outage ------------------------------------------------------------
PARKED_KEY = "agentops:budgets:parked-usage"


def settle_durably(
    reservation_id: int | None, usage: Mapping[str, Any], *, patience: float | None = None
) -> UsageRecord | None:
    """Settle an answered call (or record it when it held no reservation) even while PostgreSQL is away: try
    for `patience` seconds, then park it in Redis, where beat applies it (settle_parked). The ledger row keeps
    the time of the call. Only with Redis away too is it lost, and then the log line carries all of it.
    Returns the ledger row (None when the settle was parked)."""
    at = timezone.now()
    patience = settings.BUDGET_SETTLE_PATIENCE_SECONDS if patience is None else patience
    deadline = time.monotonic() + patience
    while True:
        try:
            return _settle_or_record(reservation_id, usage, at)
        except BudgetUnavailable:
            if connection.in_atomic_block or time.monotonic() >= deadline:
                break
            discard_connection()
            time.sleep(0.5)
    _park(reservation_id, usage, at)
    return None


def _settle_or_record(reservation_id: int | None, usage: Mapping[str, Any], at: dt.datetime) -> UsageRecord:
    if reservation_id is None:
        return record_usage(usage, now=at)
    return settle(reservation_id, usage, now=at)


def _park(reservation_id: int | None, usage: Mapping[str, Any], at: dt.datetime) -> None:
    item = json.dumps({"reservation": reservation_id, "usage": dict(usage), "at": at.isoformat()}, default=str)
    try:
        runtime_redis().rpush(PARKED_KEY, item)
    except Exception:
        log.error("budget.usage_lost", reservation=reservation_id, usage=item, exc_info=True)
        return
    log.warning("budget.settle_parked", reservation=reservation_id)


def settle_parked(limit: int = 1000) -> int:
    """Beat: apply the parked settles, oldest first; one PostgreSQL still refuses goes back to wait."""
    client = runtime_redis()
    applied = 0
    for _ in range(limit):
        raw = client.lpop(PARKED_KEY)
        if raw is None:
            break
        try:
            item = json.loads(raw)
            _settle_or_record(item["reservation"], item["usage"], dt.datetime.fromisoformat(item["at"]))
        except BudgetUnavailable:
            client.lpush(PARKED_KEY, raw)
            break
        except Exception:  # one bad item must not block the rest; the log line keeps all of it
            log.error("budget.parked_settle_failed", item=raw.decode(errors="replace")[:5000], exc_info=True)
            continue
        applied += 1
    if applied:
        log.info("budget.parked_settled", count=applied)
    return applied


def _settle_held(reservation_id: int, usage: Mapping[str, Any], now: dt.datetime) -> UsageRecord | None:
    """The common settle (a held reservation, a priced answer) in one statement; None if it was not held."""
    input_tokens = max(int(usage.get("input_tokens") or 0), 0)
    output_tokens = max(int(usage.get("output_tokens") or 0), 0)
    cached_tokens = max(int(usage.get("cached_tokens") or 0), 0)
    model = str(usage.get("model") or "unknown")[:120]
    cached = min(cached_tokens, input_tokens)  # priced as in cost_of: cached input at its own price
    operation = usage.get("operation")
    outcome = prepared_value(
        _SETTLE,
        {
            "id": reservation_id,
            "now": now,
            "spent": input_tokens + output_tokens,
            "uncached": input_tokens - cached,
            "cached_tokens": cached,
            "output": output_tokens,
            "step": int_or_none(usage.get("step")),
            "model": model,
            "provider": str(usage.get("provider") or "")[:80],
            "operation": str(operation)[:100] if operation else None,
            "input": input_tokens,
            "source": str(usage.get("source") or "run")[:20],
            "price_names": usage_price_names(usage),  # the statement adds the reservation's model, then *
        },
    )
    if outcome is None:
        return None
    outcome = json.loads(outcome, parse_float=Decimal)
    values = dict(zip(_USAGE_COLUMNS, outcome["record"], strict=True))
    values["cost_usd"] = Decimal(values["cost_usd"])
    values["created_at"] = dt.datetime.fromisoformat(values["created_at"])
    record = UsageRecord.from_db(connection.alias, _USAGE_COLUMNS, list(values.values()))
    if input_tokens + output_tokens or record.cost_usd:
        metrics.LLM_COST.labels(model=model).inc(float(record.cost_usd))
        spent = [
            (c, int(st), Decimal(su), lt, Decimal(lu) if lu is not None else None, pct, period)
            for c, st, su, lt, lu, pct, period in outcome["counters"]
        ]
        transaction.on_commit(lambda: _after_settle(spent))
    return record


def _after_settle(counters: list[tuple]) -> None:
    """After a committed settle: announce it; read counters for the alert check only past a threshold (the
    settle statement returned each counter's new spend and its budget's limits)."""
    crossed = []
    for counter_id, tokens, usd, limit_tokens, limit_usd, soft_pct, period in counters:
        shares = [tokens / limit_tokens] if limit_tokens else []
        if limit_usd:
            shares.append(float(usd / limit_usd))
        if shares and (max(shares) * 100 >= soft_pct or (period == Budget.Period.DAY and max(shares) > 1)):
            crossed.append(counter_id)
    after_spend(crossed)


def record_usage(usage: Mapping[str, Any], *, now: dt.datetime | None = None) -> UsageRecord:
    """Record a call that held no reservation (a cache hit, a human's answer, usage reported after the
    fact): priced, added to the spend of every budget that applies."""
    try:
        with transaction.atomic():
            return _apply_usage(usage, reservation=None, now=now)
    except STORE_ERRORS as exc:
        raise fail_closed(exc) from exc


def _apply_usage(
    usage: Mapping[str, Any], *, reservation: Reservation | None, now: dt.datetime | None = None
) -> UsageRecord:
    now = now or timezone.now()
    caller = (
        Caller.from_meta(usage)
        if reservation is None
        else Caller(agent=reservation.agent, session_id=reservation.session_id, run_id=reservation.run_id)
    )
    cached_hit = bool(usage.get("cache_hit") or usage.get("cached"))
    input_tokens = max(int(usage.get("input_tokens") or 0), 0)
    output_tokens = max(int(usage.get("output_tokens") or 0), 0)
    cached_tokens = max(int(usage.get("cached_tokens") or 0), 0)
    model = str(usage.get("model") or (reservation.model if reservation else "") or "unknown")[:120]
    names = [*usage_price_names(usage), *([reservation.model] if reservation and reservation.model else [])]
    price = None if cached_hit else price_in_force(names, now)
    # A cache hit answers from a stored answer: it costs nothing and uses no budget.
    cost = Decimal(0) if cached_hit else cost_of(price, input_tokens, output_tokens, cached_tokens)
    spent_tokens = 0 if cached_hit else input_tokens + output_tokens
    held = reservation is not None and reservation.status == Reservation.Status.HELD

    if reservation is not None:
        ids = list(reservation.counter_ids)
    else:
        keys = [
            (b, s, period_start(b, now))
            for b, s in applicable_budgets(caller)
            if b.limit_tokens is not None or b.limit_usd is not None
        ]
        ids = []
        if keys and spent_tokens:
            with connection.cursor() as cursor:
                ids = [c.id for c in lock_counters(cursor, keys)]
    if ids:
        with connection.cursor() as cursor:
            if reservation is not None:  # the no-reservation path locked them above
                lock_counters_by_id(cursor, ids)
            cursor.execute(
                APPLY_TO_COUNTERS,
                {
                    "spent_tokens": spent_tokens,
                    "spent_usd": cost,
                    "held_tokens": reservation.tokens if held else 0,
                    "held_usd": reservation.usd if held else Decimal(0),
                    "held_count": 1 if held else 0,
                    "ids": ids,
                },
            )
    record = UsageRecord.objects.create(
        agent=caller.agent[:80],
        run_id=caller.run_id,
        step=int_or_none(usage.get("step")),
        session_id=caller.session_id[:200],
        model=model,
        provider=str(usage.get("provider") or "")[:80],
        operation=str(usage.get("operation") or (reservation.operation if reservation else "") or "call")[:100],
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached_tokens,
        cost_usd=cost,
        price=price,
        cached=cached_hit,
        reservation_id=reservation.pk if reservation else None,
        source=str(usage.get("source") or "run")[:20],
        created_at=now,
    )
    if reservation is not None:  # also one reclaimed or released before: its spend is now recorded, once
        reservation.status = Reservation.Status.SETTLED
        reservation.closed_at = now
        reservation.save(update_fields=["status", "closed_at"])
    if spent_tokens or cost:
        metrics.LLM_COST.labels(model=model).inc(float(cost))
        ids_after = ids
        transaction.on_commit(lambda: after_spend(ids_after))
    return record


def step_cost(run_id: int, step: int) -> Decimal:
    """What the calls of one run step cost (the ledger rows it wrote)."""
    total = UsageRecord.objects.filter(run_id=run_id, step=step).aggregate(cost=Sum("cost_usd"))["cost"]
    return total or Decimal(0)
