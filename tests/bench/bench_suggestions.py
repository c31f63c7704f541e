"""Policy suggestions (issue 18, item 4) over 100,000 decisions: review.suggestions.find() — the grouped
query with its window function, the covered / dismissed checks — and GET /review/suggestions/ (server time,
Django's test Client in-process, as a superuser) vs a bare ``SELECT agent_id, operation, count(*) … GROUP BY``
over the same rows, interleaved in rounds.

Rows are seeded with one INSERT … SELECT … FROM generate_series in a database of its own: 20 agents × 50
operations × 100 decisions, decided over 30 days; most groups approved throughout (suggestions), some with a
modification among the latest (none), some all rejected (auto-reject).
"""

from __future__ import annotations

import time

from tests.bench.common import bench_database
from tests.bench.harness import Result, interleaved, median_of_rounds

DECISIONS, AGENTS, OPERATIONS = 100_000, 20, 50
ROUNDS, SAMPLES = 5, 5
GOAL_MS = 500.0

SEED = """
INSERT INTO review_escalation (agent_id, session_id, source, kind, operation, arguments, value, retry_count,
    context, reason, rule, priority, priority_rank, state, queue, deadline_at, decision, comment, version,
    created_at, decided_at, team)
SELECT a.id, '', 'api', 'tool', 'op_' || (g / %(agents)s %% %(operations)s), '{}', (g %% 500)::float, 0, '{}',
    'sensitive_operation', '', 'high', 0, 'decided', 'reviewers', now(),
    CASE WHEN (g / %(agents)s %% %(operations)s) %% 10 = 9 THEN 'rejected'
         WHEN (g / %(agents)s %% %(operations)s) %% 10 = 8 AND g > %(n)s - %(groups)s * 3 THEN 'modified'
         ELSE 'approved' END,
    '', 1, now() - interval '30 days' + g * interval '25 seconds', now() - interval '30 days' + g * interval '26 seconds', ''
FROM generate_series(1, %(n)s) AS g
JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM agentops_agent) a ON a.k = g %% %(agents)s
"""


def _timed(fn, samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def run() -> list[Result]:
    with bench_database("suggestions"):
        from django.db import connection
        from django.test import Client

        from agentops.runs.actions import agents as agent_actions
        from review import suggestions
        from tests.fixtures.people import ROOT

        for i in range(AGENTS):
            agent_actions.ensure_agent(f"bench-agent-{i:02d}")
        with connection.cursor() as cursor:
            started = time.perf_counter()
            params = {"agents": AGENTS, "operations": OPERATIONS, "n": DECISIONS, "groups": AGENTS * OPERATIONS}
            cursor.execute(SEED, params)
            cursor.execute("VACUUM ANALYZE review_escalation")  # what autovacuum does to a real table
        print(f"  seeded {DECISIONS:,} decisions in {time.perf_counter() - started:.1f} s", flush=True)
        found = suggestions.find()
        kinds = sorted({f.kind for f in found})
        print(f"  {len(found)} suggestions ({', '.join(kinds)})", flush=True)

        def bare():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT agent_id, operation, count(*) FROM review_escalation WHERE state = 'decided' "
                    "GROUP BY agent_id, operation"
                )
                cursor.fetchall()

        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(ROOT.user())

        def page():
            response = client.get("/review/suggestions/")
            assert response.status_code == 200, response.status_code

        results = []
        for name, subject in (
            ("suggestions.find at 100k decisions", suggestions.find),
            ("suggestions page at 100k", page),
        ):
            subject()  # warm-up
            got, base = interleaved(ROUNDS, lambda s=subject: _timed(s, SAMPLES), lambda: _timed(bare, SAMPLES))
            value, baseline = median_of_rounds(got), median_of_rounds(base)
            results.append(
                Result(
                    name,
                    "ms",
                    value,
                    baseline,
                    f"value <= {GOAL_MS:g} ms",
                    value <= GOAL_MS,
                    p95=median_of_rounds(got, 95),
                    baseline_p95=median_of_rounds(base, 95),
                    note=f"{len(found)} suggestions; baseline: a bare GROUP BY count",
                )
            )
        return results
