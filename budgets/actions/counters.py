"""The budget counters: one row per budget × subject × period holding what is spent and what is reserved.

Store: PostgreSQL row locks (chosen by measurement, see tests/bench/bench_budgets.py and the README).
A reservation locks the counter rows of every budget that applies, in id order (no deadlocks), checks
each hard limit against spent + reserved + the estimate, and either adds the estimate to all of them or
to none. Settle swaps the estimate for the actual usage and writes the ledger row in the same
transaction, so "reserved == actual after settle" is one commit, not a promise. If PostgreSQL cannot be
reached the call is refused with ``BudgetUnavailable`` (fail closed).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import psycopg
import structlog
from django.db import DatabaseError, InterfaceError, OperationalError, connection

from agentops.lib import live
from agentops.runtime.protocols import BudgetUnavailable
from budgets.models import Budget

log = structlog.get_logger(__name__)

STORE_ERRORS = (OperationalError, InterfaceError)


def fail_closed(exc: BaseException) -> BudgetUnavailable:
    """The refusal a caller gets while the store (PostgreSQL) cannot be reached; logged once here."""
    log.error("budget.store_unavailable", error=str(exc)[:300])
    return BudgetUnavailable(f"the budget store (PostgreSQL) is unreachable, so no call is admitted: {exc}")


def store_is_reachable() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False


# --- counters (raw SQL on the hot path: one statement per step while the locks are held) -------------

ENSURE_COUNTERS = """
INSERT INTO budgets_budgetcounter
    (budget_id, subject, period_start, spent_tokens, spent_usd, reserved_tokens, reserved_usd, in_flight, updated_at)
SELECT b, s, p, 0, 0, 0, 0, 0, now() FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[]) AS k(b, s, p)
ON CONFLICT (budget_id, subject, period_start) DO NOTHING
"""
_LOCK_COUNTERS = """
SELECT c.id, c.budget_id, c.subject, c.period_start, c.spent_tokens, c.spent_usd, c.reserved_tokens, c.reserved_usd
FROM budgets_budgetcounter c
JOIN unnest(%s::bigint[], %s::text[], %s::timestamptz[]) AS k(b, s, p)
  ON c.budget_id = k.b AND c.subject = k.s AND c.period_start = k.p
ORDER BY c.id FOR UPDATE OF c
"""
_LOCK_COUNTERS_BY_ID = """
SELECT id, budget_id, subject, period_start, spent_tokens, spent_usd, reserved_tokens, reserved_usd
FROM budgets_budgetcounter WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE
"""
APPLY_TO_COUNTERS = """
UPDATE budgets_budgetcounter
SET spent_tokens = spent_tokens + %(spent_tokens)s, spent_usd = spent_usd + %(spent_usd)s,
    reserved_tokens = reserved_tokens - %(held_tokens)s, reserved_usd = reserved_usd - %(held_usd)s,
    in_flight = in_flight - %(held_count)s, updated_at = now()
WHERE id = ANY(%(ids)s::bigint[])
"""


def prepared_value(sql: str, params: dict):
    """The first column of the first row of ``sql`` run as a server-side prepared statement on Django's
    connection (in its transaction, if one is open; errors mapped to Django's as ``cursor.execute`` does).

    For the hold and settle statements, run on every guarded call: Django binds parameters on the client
    (composing the statement's text with quoted literals, arrays element by element) and never prepares,
    so PostgreSQL parses and plans the call each time; prepared with binary parameters, both sides do less.
    """
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchone()[0]


@dataclass
class CounterRow:
    id: int
    budget_id: int
    subject: str
    period_start: dt.datetime
    spent_tokens: int
    spent_usd: Decimal
    reserved_tokens: int
    reserved_usd: Decimal


def lock_counters(cursor, keys: list[tuple[Budget, str, dt.datetime]]) -> list[CounterRow]:
    """Create (if new) and lock the counters for ``keys`` in id order."""
    columns = ([b.id for b, _, _ in keys], [s for _, s, _ in keys], [p for _, _, p in keys])
    cursor.execute(ENSURE_COUNTERS, columns)
    cursor.execute(_LOCK_COUNTERS, columns)
    return [CounterRow(*row) for row in cursor.fetchall()]


def lock_counters_by_id(cursor, ids: Iterable[int]) -> list[CounterRow]:
    cursor.execute(_LOCK_COUNTERS_BY_ID, [list(ids)])
    return [CounterRow(*row) for row in cursor.fetchall()]


# --- live "budgets changed" signal -----------------------------------------------------------------

_LAST_PUBLISH = [0.0]
PUBLISH_EVERY = 1.0  # seconds: a page re-reads at most this often, however busy the traffic


def publish_budgets() -> None:
    """Tell open budget and cost pages that numbers moved (throttled per process; pages re-read)."""
    now = time.monotonic()
    if now - _LAST_PUBLISH[0] < PUBLISH_EVERY:
        return
    _LAST_PUBLISH[0] = now
    live.send_now("budgets", "budgets.changed", {})
