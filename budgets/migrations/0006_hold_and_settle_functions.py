"""The reserve and settle statements, and the budget/price directory read before a reserve, as PL/pgSQL
functions: PostgreSQL plans them once per connection instead of parsing and planning large statements on
every call (Django binds parameters on the client, so plain statements are never prepared). Each still
runs as ONE statement, so the counter row locks are held inside PostgreSQL only. See budgets/actions.py
for the callers."""

from django.db import migrations

HOLD = """
CREATE OR REPLACE FUNCTION budgets_hold(
    a_b bigint[], a_s text[], a_p timestamptz[], a_hard boolean[], a_lt bigint[], a_lu numeric[], a_n integer,
    a_tokens bigint, a_usd numeric, a_agent text, a_run_id bigint, a_session_id text, a_model text,
    a_operation text, a_expires_at timestamptz, a_now timestamptz
) RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    result jsonb;
BEGIN
    WITH keys AS (
        SELECT * FROM unnest(a_b::bigint[], a_s::text[], a_p::timestamptz[], a_hard::bool[],
                             a_lt::bigint[], a_lu::numeric[]) AS k(b, s, p, hard, lt, lu)
    ),
    locked AS (
        SELECT c.id, c.budget_id, c.subject, c.period_start, c.spent_tokens, c.spent_usd, c.reserved_tokens,
               c.reserved_usd, k.hard, k.lt, k.lu
        FROM budgets_budgetcounter c JOIN keys k ON c.budget_id = k.b AND c.subject = k.s AND c.period_start = k.p
        ORDER BY c.id FOR UPDATE OF c
    ),
    verdict AS (
        SELECT count(*) = a_n AS complete,
               coalesce(bool_and(NOT hard OR ((lt IS NULL OR spent_tokens + reserved_tokens + a_tokens <= lt)
                                              AND (lu IS NULL OR spent_usd + reserved_usd + a_usd <= lu))), true) AS fits,
               ARRAY(SELECT id FROM locked ORDER BY id) AS ids
        FROM locked
    ),
    held AS (
        UPDATE budgets_budgetcounter c
        SET reserved_tokens = reserved_tokens + a_tokens, reserved_usd = reserved_usd + a_usd,
            in_flight = in_flight + 1, updated_at = now()
        FROM verdict v WHERE v.complete AND v.fits AND c.id = ANY(v.ids)
    ),
    ins AS (
        INSERT INTO budgets_reservation
            (counter_ids, agent, run_id, session_id, model, operation, tokens, usd, status, expires_at, created_at)
        SELECT to_jsonb(v.ids), a_agent, a_run_id, a_session_id, a_model, a_operation, a_tokens, a_usd,
               'held', a_expires_at, a_now
        FROM verdict v WHERE v.complete AND v.fits
        RETURNING id
    )
    SELECT jsonb_build_object(
        'id', (SELECT id FROM ins),
        'complete', (SELECT complete FROM verdict),
        'rows', coalesce((SELECT jsonb_agg(jsonb_build_array(l.id, l.budget_id, l.subject, l.period_start, l.spent_tokens,
                                                             l.spent_usd, l.reserved_tokens, l.reserved_usd) ORDER BY l.id)
                          FROM locked l), '[]'::jsonb))
    INTO result;
    RETURN result;
END
$fn$;
"""

SETTLE = """
CREATE OR REPLACE FUNCTION budgets_settle(
    a_id bigint, a_now timestamptz, a_spent bigint, a_uncached bigint, a_cached_tokens bigint, a_output bigint,
    a_step integer, a_model text, a_provider text, a_operation text, a_input bigint, a_source text
) RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    result jsonb;
BEGIN
    WITH price AS (
        SELECT id, input_per_1k, output_per_1k, coalesce(cached_input_per_1k, input_per_1k) AS cached_per_1k
        FROM budgets_modelprice WHERE model IN (a_model, '*') AND effective_from <= a_now
        ORDER BY (model = a_model) DESC, effective_from DESC LIMIT 1
    ),
    cost AS (
        SELECT coalesce((SELECT round((a_uncached * input_per_1k + a_cached_tokens * cached_per_1k
                                       + a_output * output_per_1k) / 1000, 8) FROM price), 0) AS usd,
               (SELECT id FROM price) AS price_id
    ),
    r AS (
        UPDATE budgets_reservation SET status = 'settled', closed_at = a_now WHERE id = a_id AND status = 'held'
        RETURNING id, counter_ids, tokens, usd, agent, run_id, session_id, operation
    ),
    locked AS (
        SELECT ARRAY(
            SELECT c.id FROM budgets_budgetcounter c
            WHERE c.id IN (SELECT jsonb_array_elements_text(r.counter_ids)::bigint FROM r) ORDER BY c.id FOR UPDATE
        ) AS ids
    ),
    applied AS (
        UPDATE budgets_budgetcounter c
        SET spent_tokens = spent_tokens + a_spent, spent_usd = spent_usd + cost.usd,
            reserved_tokens = reserved_tokens - r.tokens, reserved_usd = reserved_usd - r.usd,
            in_flight = in_flight - 1, updated_at = now()
        FROM r, locked, cost, budgets_budget b
        WHERE c.id = ANY(locked.ids) AND b.id = c.budget_id
        RETURNING c.id, c.spent_tokens, c.spent_usd, b.limit_tokens, b.limit_usd, b.soft_threshold_pct, b.period
    ),
    ins AS (
        INSERT INTO budgets_usagerecord
            (agent, run_id, step, session_id, model, provider, operation, input_tokens, output_tokens, cached_tokens,
             cost_usd, price_id, cached, reservation_id, source, rolled_up, created_at)
        SELECT r.agent, r.run_id, a_step, r.session_id, a_model, a_provider, coalesce(a_operation, r.operation),
               a_input, a_output, a_cached_tokens, cost.usd, cost.price_id, false, r.id, a_source, false, a_now
        FROM r, cost
        RETURNING id, agent, run_id, step, session_id, model, provider, operation, input_tokens, output_tokens,
                  cached_tokens, cost_usd, price_id, cached, reservation_id, source, rolled_up, created_at
    )
    SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM ins) THEN NULL ELSE jsonb_build_object(
        'record', (SELECT jsonb_build_array(id, agent, run_id, step, session_id, model, provider, operation, input_tokens,
                                            output_tokens, cached_tokens, cost_usd, price_id, cached, reservation_id,
                                            source, rolled_up, created_at) FROM ins),
        'counters', coalesce((SELECT jsonb_agg(jsonb_build_array(a.id, a.spent_tokens, a.spent_usd, a.limit_tokens,
                                                                 a.limit_usd, a.soft_threshold_pct, a.period))
                              FROM applied a), '[]'::jsonb)) END
    INTO result;
    RETURN result;
END
$fn$;
"""

DIRECTORY = """
CREATE OR REPLACE FUNCTION budgets_directory(a_agent text, a_models text[], a_at timestamptz)
RETURNS text[] LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    RETURN (
        SELECT ARRAY[
            (SELECT coalesce(json_agg(json_build_array(id, name, scope, scope_key, period, timezone, limit_tokens, limit_usd,
                                                       soft_threshold_pct, hard_stop, operation_limits, downgrade_model,
                                                       on_block) ORDER BY id), '[]')::text
             FROM budgets_budget WHERE enabled),
            (SELECT team FROM agentops_agent WHERE name = a_agent),
            (SELECT coalesce(json_agg(json_build_array(id, model, input_per_1k, output_per_1k, cached_input_per_1k)),
                             '[]')::text
             FROM (SELECT DISTINCT ON (model) id, model, input_per_1k, output_per_1k, cached_input_per_1k
                   FROM budgets_modelprice WHERE model = ANY(a_models) AND effective_from <= a_at
                   ORDER BY model, effective_from DESC) p)
    ]);
END
$fn$;
"""


class Migration(migrations.Migration):
    dependencies = [("budgets", "0005_daily_usage")]

    operations = [
        migrations.RunSQL(HOLD, "DROP FUNCTION IF EXISTS budgets_hold"),
        migrations.RunSQL(SETTLE, "DROP FUNCTION IF EXISTS budgets_settle"),
        migrations.RunSQL(DIRECTORY, "DROP FUNCTION IF EXISTS budgets_directory"),
    ]
