"""Price a call at the most specific name that has a price (the answered name, the requested and route
models, each without date suffix and provider prefix, then the reservation's model, then ``*``), and add the
seed's price table beside the rows already there."""

import importlib

from django.db import migrations

from budgets.seed import seed_price_table

before = importlib.import_module("budgets.migrations.0006_hold_and_settle_functions")

OLD_SIGNATURE = "budgets_settle(bigint, timestamptz, bigint, bigint, bigint, bigint, integer, text, text, text, bigint, text)"

SETTLE = """
CREATE OR REPLACE FUNCTION budgets_settle(
    a_id bigint, a_now timestamptz, a_spent bigint, a_uncached bigint, a_cached_tokens bigint, a_output bigint,
    a_step integer, a_model text, a_provider text, a_operation text, a_input bigint, a_source text,
    a_price_names text[]
) RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    result jsonb;
BEGIN
    WITH r AS (
        UPDATE budgets_reservation SET status = 'settled', closed_at = a_now WHERE id = a_id AND status = 'held'
        RETURNING id, counter_ids, tokens, usd, agent, run_id, session_id, operation, model
    ),
    names AS (
        SELECT a_price_names || ARRAY[(SELECT model FROM r), '*']::text[] AS list
    ),
    price AS (
        SELECT p.id, p.input_per_1k, p.output_per_1k, coalesce(p.cached_input_per_1k, p.input_per_1k) AS cached_per_1k
        FROM budgets_modelprice p, names
        WHERE p.model = ANY(names.list) AND p.effective_from <= a_now
        ORDER BY array_position(names.list, p.model), p.effective_from DESC LIMIT 1
    ),
    cost AS (
        SELECT coalesce((SELECT round((a_uncached * input_per_1k + a_cached_tokens * cached_per_1k
                                       + a_output * output_per_1k) / 1000, 8) FROM price), 0) AS usd,
               (SELECT id FROM price) AS price_id
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


def seed_prices(apps, schema_editor):
    seed_price_table(apps.get_model)


class Migration(migrations.Migration):
    dependencies = [("budgets", "0006_hold_and_settle_functions")]

    operations = [
        migrations.RunSQL(
            [f"DROP FUNCTION IF EXISTS {OLD_SIGNATURE}", SETTLE],
            ["DROP FUNCTION IF EXISTS budgets_settle", before.SETTLE],
        ),
        migrations.RunPython(seed_prices, migrations.RunPython.noop),
    ]
