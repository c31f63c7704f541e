"""Folding the ledger into the hourly, daily and per-session rollups the cost dashboard reads."""

from __future__ import annotations

from django.db import connection, transaction

_ROLL_UP = """
WITH moved AS (
    UPDATE budgets_usagerecord u SET rolled_up = true
    WHERE u.id IN (
        SELECT id FROM budgets_usagerecord WHERE NOT rolled_up ORDER BY id LIMIT %(batch)s FOR UPDATE SKIP LOCKED
    )
    RETURNING u.created_at, u.agent, u.model, u.operation, u.session_id, u.cached,
              u.input_tokens, u.output_tokens, u.cached_tokens, u.cost_usd
),
hourly AS (
    INSERT INTO budgets_hourlyusage
        (hour, agent, model, operation, calls, cache_hits, input_tokens, output_tokens, cached_tokens, cost_usd)
    SELECT date_trunc('hour', created_at), agent, model, operation, count(*), count(*) FILTER (WHERE cached),
           sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost_usd)
    FROM moved GROUP BY 1, 2, 3, 4
    ON CONFLICT (hour, agent, model, operation) DO UPDATE SET
        calls = budgets_hourlyusage.calls + EXCLUDED.calls,
        cache_hits = budgets_hourlyusage.cache_hits + EXCLUDED.cache_hits,
        input_tokens = budgets_hourlyusage.input_tokens + EXCLUDED.input_tokens,
        output_tokens = budgets_hourlyusage.output_tokens + EXCLUDED.output_tokens,
        cached_tokens = budgets_hourlyusage.cached_tokens + EXCLUDED.cached_tokens,
        cost_usd = budgets_hourlyusage.cost_usd + EXCLUDED.cost_usd
),
daily AS (
    INSERT INTO budgets_dailyusage
        (day, agent, model, operation, calls, cache_hits, input_tokens, output_tokens, cached_tokens, cost_usd)
    SELECT (created_at AT TIME ZONE 'UTC')::date, agent, model, operation, count(*), count(*) FILTER (WHERE cached),
           sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost_usd)
    FROM moved GROUP BY 1, 2, 3, 4
    ON CONFLICT (day, agent, model, operation) DO UPDATE SET
        calls = budgets_dailyusage.calls + EXCLUDED.calls,
        cache_hits = budgets_dailyusage.cache_hits + EXCLUDED.cache_hits,
        input_tokens = budgets_dailyusage.input_tokens + EXCLUDED.input_tokens,
        output_tokens = budgets_dailyusage.output_tokens + EXCLUDED.output_tokens,
        cached_tokens = budgets_dailyusage.cached_tokens + EXCLUDED.cached_tokens,
        cost_usd = budgets_dailyusage.cost_usd + EXCLUDED.cost_usd
),
sessions AS (
    INSERT INTO budgets_sessionusage (day, session_id, agent, calls, tokens, cost_usd)
    SELECT (created_at AT TIME ZONE 'UTC')::date, session_id, agent, count(*),
           sum(input_tokens + output_tokens), sum(cost_usd)
    FROM moved WHERE session_id <> '' GROUP BY 1, 2, 3
    ON CONFLICT (day, session_id, agent) DO UPDATE SET
        calls = budgets_sessionusage.calls + EXCLUDED.calls,
        tokens = budgets_sessionusage.tokens + EXCLUDED.tokens,
        cost_usd = budgets_sessionusage.cost_usd + EXCLUDED.cost_usd
)
SELECT count(*) FROM moved
"""


def roll_up_usage(batch: int = 50_000, max_batches: int = 40) -> int:
    """Beat: fold new ledger rows into the hourly, daily and per-session rollups, exactly once each (rows
    are marked in the same statement; concurrent rollers skip each other's rows)."""
    total = 0
    for _ in range(max_batches):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_ROLL_UP, {"batch": batch})
            moved = cursor.fetchone()[0]
        total += moved
        if moved < batch:
            break
    return total
