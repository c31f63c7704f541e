"""The budget directory's version in PostgreSQL, checked by the hold statement itself (issue 19).

A reservation used to ask Redis for the directory version (one GET, a round trip and ~0.2 ms of the web
process's CPU per call) before it trusted its cached copy of the budgets, the agent's team and the prices.
Now triggers bump a one-row version in the same transaction as any change to budgets, prices or an
agent's team, ``budgets_directory`` returns the version it read, and ``budgets_hold`` refuses to hold with
a stale copy (it returns {"stale": true}; the caller re-reads and holds again). The check is transactional,
so it is also stricter than the Redis version (which was bumped after commit, best effort).

The version table has no Django model on purpose: a test flush must not empty it.
"""

import importlib

from django.db import migrations

before = importlib.import_module("budgets.migrations.0006_hold_and_settle_functions")

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS budgets_directory_version (one boolean PRIMARY KEY DEFAULT true CHECK (one), n bigint NOT NULL);
INSERT INTO budgets_directory_version (one, n) VALUES (true, 1) ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION budgets_directory_bump() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE budgets_directory_version SET n = n + 1;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER budgets_budget_directory AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON budgets_budget
    FOR EACH STATEMENT EXECUTE FUNCTION budgets_directory_bump();
CREATE TRIGGER budgets_modelprice_directory AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON budgets_modelprice
    FOR EACH STATEMENT EXECUTE FUNCTION budgets_directory_bump();
-- agents are saved often (every field); only a change of the team moves the directory
CREATE TRIGGER agentops_agent_team_insert AFTER INSERT ON agentops_agent
    FOR EACH ROW WHEN (NEW.team <> '') EXECUTE FUNCTION budgets_directory_bump();
CREATE TRIGGER agentops_agent_team_update AFTER UPDATE ON agentops_agent
    FOR EACH ROW WHEN (OLD.team IS DISTINCT FROM NEW.team OR OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION budgets_directory_bump();
CREATE TRIGGER agentops_agent_team_delete AFTER DELETE ON agentops_agent
    FOR EACH ROW WHEN (OLD.team <> '') EXECUTE FUNCTION budgets_directory_bump();
CREATE TRIGGER agentops_agent_team_truncate AFTER TRUNCATE ON agentops_agent
    FOR EACH STATEMENT EXECUTE FUNCTION budgets_directory_bump();
"""

DROP_VERSION_TABLE = """
DROP TRIGGER IF EXISTS budgets_budget_directory ON budgets_budget;
DROP TRIGGER IF EXISTS budgets_modelprice_directory ON budgets_modelprice;
DROP TRIGGER IF EXISTS agentops_agent_team_insert ON agentops_agent;
DROP TRIGGER IF EXISTS agentops_agent_team_update ON agentops_agent;
DROP TRIGGER IF EXISTS agentops_agent_team_delete ON agentops_agent;
DROP TRIGGER IF EXISTS agentops_agent_team_truncate ON agentops_agent;
DROP FUNCTION IF EXISTS budgets_directory_bump();
DROP TABLE IF EXISTS budgets_directory_version;
"""

# 0006's directory, with the version read in the same snapshot as its 4th element.
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
                   ORDER BY model, effective_from DESC) p),
            (SELECT n::text FROM budgets_directory_version)
    ]);
END
$fn$;
"""

# 0006's hold with one more argument: the directory version the caller's limits were read at (NULL: do not
# check, for a reservation dated in the past or future that read the directory itself).
HOLD = """
CREATE OR REPLACE FUNCTION budgets_hold(
    a_b bigint[], a_s text[], a_p timestamptz[], a_hard boolean[], a_lt bigint[], a_lu numeric[], a_n integer,
    a_tokens bigint, a_usd numeric, a_agent text, a_run_id bigint, a_session_id text, a_model text,
    a_operation text, a_expires_at timestamptz, a_now timestamptz, a_version bigint
) RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    result jsonb;
BEGIN
    IF a_version IS NOT NULL AND a_version IS DISTINCT FROM (SELECT n FROM budgets_directory_version) THEN
        RETURN jsonb_build_object('stale', true);
    END IF;
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

NEW_HOLD_SIGNATURE = (
    "budgets_hold(bigint[], text[], timestamptz[], boolean[], bigint[], numeric[], integer, bigint, numeric, text,"
    " bigint, text, text, text, timestamptz, timestamptz, bigint)"
)


class Migration(migrations.Migration):
    dependencies = [("budgets", "0009_seed_alerts"), ("agentops", "0003_runs")]

    operations = [
        migrations.RunSQL(VERSION_TABLE, DROP_VERSION_TABLE),
        migrations.RunSQL(DIRECTORY, before.DIRECTORY),
        # the 16-argument hold of 0006 stays (an older process still running during a deploy calls it)
        migrations.RunSQL(HOLD, f"DROP FUNCTION IF EXISTS {NEW_HOLD_SIGNATURE}"),
    ]
