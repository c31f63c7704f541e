"""The review queue at scale (issue 18): server time of GET /review/ (the whole page, a signed-in reviewer,
in-process through Django's test Client) at 10,000 open escalations vs 100, p50 and p95; the same for a
free-text search (Latin and Chinese), for the last page and for a per-team view.

Rows are made with bulk_create (their ages spread over a day, 8 agents in 3 teams, arguments in English and
Chinese), then VACUUM ANALYZE as autovacuum would have done. Everything runs in a database of its own
(<db>_bench_queue, created and migrated here, dropped after). Goal: < 200 ms at 10,000.
"""

from __future__ import annotations

import logging
import os
import statistics
import time

from tests.bench.common import bench_database
from tests.bench.harness import Result, percentile

SMALL, LARGE = 100, 10_000
WARMUP, SAMPLES = 3, 25
GOAL_MS = 200.0
AGENTS = [(f"bench-agent-{i}", ("payments", "support", "research")[i % 3]) for i in range(8)]
OPERATIONS = ["send_refund", "send_note", "delete_file", "lookup_order", "modify_plan", "search_kb"]
VIEWS = [
    ("page", "/review/"),
    ("search", "/review/?q=refund+order+4242"),
    ("search-zh", "/review/?q=%E9%80%80%E6%AC%BE%E5%8D%95"),  # 退款单
    ("last page", "/review/?page=1000"),
    ("team, by deadline", "/review/?team=payments&sort=deadline"),
]


def _seed(start: int, stop: int) -> None:
    """Open escalations numbered start..stop-1 (all on the reviewers' queue)."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from agentops.runs.actions import agents as agent_actions
    from review.models import PRIORITY_ORDER, Escalation

    agents = [agent_actions.ensure_agent(name) for name, _ in AGENTS]
    teams = dict(AGENTS)
    now = timezone.now()
    priorities = ["high", "medium", "low"]
    batch = []
    for n in range(start, stop):
        agent = agents[n % len(agents)]
        priority = priorities[n % 3]
        batch.append(
            Escalation(
                agent=agent,
                team=teams[agent.name],
                session_id=f"session-{n % 997}",
                operation=OPERATIONS[n % len(OPERATIONS)],
                arguments={
                    "to": f"customer{n}@example.com",
                    "body": f"refund order {n}" if n % 2 else f"退款单 {n}：客户要求退款",
                    "amount": n % 1500,
                },
                context={"user_input": "please refund", "agent_analysis": "looks right"},
                reason="sensitive_operation",
                priority=priority,
                priority_rank=PRIORITY_ORDER[priority],
                deadline_at=now + timedelta(seconds=600 + n % 3000),
            )
        )
    Escalation.objects.bulk_create(batch, batch_size=2000)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE review_escalation SET created_at = now() - (id %% 86400) * interval '1 second' WHERE id >= %s",
            [Escalation.objects.order_by("-pk").values_list("pk", flat=True)[stop - start - 1]],
        )
        cursor.execute("VACUUM ANALYZE review_escalation")


def _client():
    from django.test import Client

    from review.models import ReviewerProfile
    from tests.fixtures.people import ALICE

    user = ALICE.user()  # the cast's reviewer
    ReviewerProfile.objects.get_or_create(user=user)
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    return client


def _time(client) -> dict[str, list[float]]:
    logging.disable(logging.INFO)  # the per-request log line would flood the output
    try:
        out = {}
        for label, path in VIEWS:
            samples = []
            for index in range(WARMUP + SAMPLES):
                started = time.perf_counter()
                response = client.get(path)
                took = (time.perf_counter() - started) * 1000
                if response.status_code != 200 or b"queue-rows" not in response.content:
                    raise RuntimeError(f"{path} answered {response.status_code}")
                if index >= WARMUP:
                    samples.append(took)
            out[label] = samples
        return out
    finally:
        logging.disable(logging.NOTSET)


def _queries(client) -> None:
    """BENCH_QUEUE_QUERIES=1: each view's SQL statements and their times at 10,000 (while tuning)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for label, path in VIEWS:
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            client.get(path)
            took = (time.perf_counter() - started) * 1000
        sql_ms = sum(float(q["time"]) for q in captured.captured_queries) * 1000
        print(f"  {label}: {took:.1f} ms, {len(captured)} statements, {sql_ms:.1f} ms in SQL", flush=True)
        for query in sorted(captured.captured_queries, key=lambda q: -float(q["time"]))[:4]:
            print(f"    {float(query['time']) * 1000:6.1f} ms  {query['sql'][:150]}", flush=True)


def _plans() -> None:
    """The search's plan at 10,000 (printed: the trigram index should answer it)."""
    from review import queries
    from review.forms import QueueFilterForm
    from tests.fixtures.people import ALICE

    user = ALICE.user()
    for text in ("refund order 4242", "退款单"):
        filters = QueueFilterForm({"q": text}, user=user).cleaned("reviewers")
        plan = queries.open_items(user, filters).explain(analyze=True)
        lines = [line for line in plan.splitlines() if "Index" in line or "Seq Scan" in line or "Execution" in line]
        print(f"  plan of q={text!r}:\n    " + "\n    ".join(lines[:6]), flush=True)


def run() -> list[Result]:
    from review.models import Escalation

    with bench_database("queue"):
        client = _client()
        _seed(0, SMALL)
        small = _time(client)
        started = time.perf_counter()
        _seed(SMALL, LARGE)
        print(f"  {LARGE - SMALL} more open escalations made in {time.perf_counter() - started:.1f} s", flush=True)
        assert Escalation.objects.filter(state="pending").count() == LARGE
        large = _time(client)
        _plans()
        if os.environ.get("BENCH_QUEUE_QUERIES"):
            _queries(client)
    results = []
    for label, _path in VIEWS:
        p50, base50 = statistics.median(large[label]), statistics.median(small[label])
        gated = label in ("page", "search")
        results.append(
            Result(
                f"review: /review/ {label} ms at 10k open (vs 100)",
                "ms",
                p50,
                base50,
                f"< {GOAL_MS:.0f} ms at 10k" if gated else "informational",
                p50 < GOAL_MS if gated else True,
                p95=percentile(large[label], 95),
                baseline_p95=percentile(small[label], 95),
                note=f"in-process Django test Client as a reviewer; {SAMPLES} requests after {WARMUP} warm-up",
            )
        )
    return results
