"""Budgets (issue #6): reservation throughput under contention, and the cost pages at 1M usage rows.

1. Reservations/s with 64 concurrent clients against ONE global budget (budgets.actions reserve → settle;
   the cap admits only part of the attempts, so refusals happen too) vs a bare row-lock loop
   (BEGIN; SELECT … FOR UPDATE; UPDATE … SET n = n + 1; COMMIT on a one-row table) from the SAME clients:
   CLIENT_PROCS processes × CLIENT_THREADS threads, each thread with its own PostgreSQL connection
   (tests/bench/budgets_clients.py), so no single GIL serialises the 64 clients. Modes are interleaved in
   rounds with a rotating order; medians. After the rounds, overspend (admitted spend beyond the cap, from
   the ledger and from the counters) and leaks (reserved tokens/dollars/in-flight left on counters, held
   reservations left) are counted and must be 0. Informational rows, same clients, same rounds: reserve
   only; the alternative store (a Redis Lua check-and-incr reserve and settle with the ledger row in
   PostgreSQL), the number behind choosing PostgreSQL; and a prototype of reserve and settle as one SQL
   statement each on the same tables (what the hot path would gain from holding the counter lock for no
   client round trip; see budgets_clients.py).
2. Scale: UsageRecord rows seeded with INSERT … SELECT … FROM generate_series (30 days, 8 agents,
   3 models, 4 operations, ~50k sessions), folded by budgets.actions.rollups.roll_up_usage() (timed) with an
   un-rolled tail of TAIL rows left, then GET /costs/, /costs/data.json and /budgets/ as a budget_admin
   through Django's test Client in-process (server time; median of N after warm-up) at 10k and at 1M rows.

Everything runs in a database of its own (<db>_bench_budgets, created and migrated here, dropped after).
While tuning: BENCH_BUDGETS_PARTS=resv or scale runs one part; BENCH_BUDGETS_CLIENTS=16x4 another split.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.bench.common import bench_database
from tests.bench.harness import Result, percentile

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".run" / "bench"

# 64 clients: processes x threads ("PxT" in BENCH_BUDGETS_CLIENTS to try another split)
CLIENT_PROCS, CLIENT_THREADS = (int(x) for x in os.environ.get("BENCH_BUDGETS_CLIENTS", "8x8").split("x"))
ROUNDS = 5
ATTEMPTS = {"lifecycle": 6, "reserve": 10, "bare": 30, "lua": 30, "onestmt": 30}  # per client per round
WARMUP_ATTEMPTS = 3
ADMIT_SHARE = 0.75  # the cap admits about this share of a round's attempts (actual usage < estimate)
EST_IN, EST_OUT, MODEL = 400, 100, "gpt-4o-mini"
AGENT = "bench-budgets"

SMALL, LARGE, TAIL = 10_000, 1_000_000, 2_000
PAGES = [("budgets:costs", "/costs/"), ("budgets:costs_data", "/costs/data.json"), ("budgets:list", "/budgets/")]
PAGE_WARMUP, PAGE_SAMPLES = 3, 15
PAGE_GOAL_MS = 200.0


# --- the clients ---------------------------------------------------------------------------------------


class Clients:
    """CLIENT_PROCS processes × CLIENT_THREADS threads; `round(command)` runs one round on all of them."""

    def __init__(self, env: dict):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = (LOGS / "budgets-clients.log").open("ab")
        self.procs = []
        for index in range(CLIENT_PROCS):
            cmd = [
                sys.executable,
                "-m",
                "tests.bench.budgets_clients",
                str(CLIENT_THREADS),
                str(index * CLIENT_THREADS),
            ]
            self.procs.append(
                subprocess.Popen(
                    cmd, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True
                )
            )
        for proc in self.procs:
            if not json.loads(proc.stdout.readline() or "{}").get("ready"):
                self.close()
                raise RuntimeError(f"a bench client did not start; see {self.log.name}")

    def round(self, command: dict) -> tuple[float, dict]:
        """Send one command to every client at once; (wall seconds until the last one finished, summed counts)."""
        line = json.dumps(command) + "\n"
        started = time.perf_counter()
        for proc in self.procs:
            proc.stdin.write(line)
            proc.stdin.flush()
        total = {"ok": 0, "refused": 0, "errors": 0, "first_error": ""}
        for proc in self.procs:
            reply = proc.stdout.readline()
            if not reply:
                raise RuntimeError(f"a bench client died; see {self.log.name}")
            counts = json.loads(reply)
            for field in ("ok", "refused", "errors"):
                total[field] += counts[field]
            total["first_error"] = total["first_error"] or counts["first_error"]
        elapsed = time.perf_counter() - started
        if total["errors"]:
            raise RuntimeError(f"{total['errors']} client errors in {command['mode']}: {total['first_error']}")
        return elapsed, total

    def close(self) -> None:
        for proc in self.procs:
            try:
                proc.stdin.write(json.dumps({"mode": "quit"}) + "\n")
                proc.stdin.close()
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.log.close()


# --- 1. reservations under contention --------------------------------------------------------------


def _new_budget(name: str, cap: int):
    from budgets.actions import budgets as budget_actions
    from budgets.models import Budget

    for old in Budget.objects.filter(enabled=True):
        old.enabled = False
        budget_actions.save_budget(old)
    return budget_actions.save_budget(
        Budget(
            name=name,
            scope=Budget.Scope.GLOBAL,
            period=Budget.Period.LIFETIME,
            timezone="UTC",
            limit_tokens=cap,
            hard_stop=True,
            operation_limits={},
            on_block=Budget.OnBlock.FAIL,
        )
    )


def _cap(attempts_per_client: int) -> int:
    return int(ADMIT_SHARE * attempts_per_client * CLIENT_PROCS * CLIENT_THREADS) * (EST_IN + EST_OUT)


def _command(mode: str, n: int, **extra) -> dict:
    return {"mode": mode, "n": n, "agent": AGENT, "model": MODEL, "est_in": EST_IN, "est_out": EST_OUT, **extra}


_AUDIT = """
SELECT b.limit_tokens, c.spent_tokens, c.reserved_tokens, c.reserved_usd, c.in_flight,
       (SELECT coalesce(sum(u.input_tokens + u.output_tokens), 0) FROM budgets_reservation r
          JOIN budgets_usagerecord u ON u.reservation_id = r.id WHERE r.counter_ids @> jsonb_build_array(c.id))
FROM budgets_budgetcounter c JOIN budgets_budget b ON b.id = c.budget_id WHERE b.name LIKE %s
"""


def audit_postgres() -> dict:
    """Overspend (ledger or counter spend past the cap), leaks (held amounts and reservations left) and drift
    (counter spend != ledger spend) over every bench budget."""
    from django.db import connection

    from budgets.models import Reservation

    overspend = leaks = drift = 0
    with connection.cursor() as cursor:
        cursor.execute(_AUDIT, ["bench %"])
        rows = cursor.fetchall()
    for cap, spent, reserved, reserved_usd, in_flight, ledger in rows:
        overspend += max(0, ledger - cap) + max(0, spent - cap)
        leaks += reserved + in_flight + (1 if reserved_usd else 0)
        drift += abs(spent - ledger)
    leaks += Reservation.objects.filter(status=Reservation.Status.HELD).count()
    return {"overspend": overspend, "leaks": leaks, "drift": drift, "budgets": len(rows)}


def audit_lua(keys: dict[str, int]) -> dict:
    from django.db.models import F, Sum

    from agentops.lib.redis import runtime_redis
    from budgets.models import UsageRecord

    redis = runtime_redis()
    overspend = leaks = drift = 0
    for key, cap in keys.items():
        state = {k.decode(): int(v) for k, v in redis.hgetall(key).items()}
        ledger = (
            UsageRecord.objects.filter(source="lua-bench", provider=key[-20:]).aggregate(
                t=Sum(F("input_tokens") + F("output_tokens"))
            )["t"]
            or 0
        )
        overspend += max(0, state.get("spent", 0) - cap) + max(0, ledger - cap)
        leaks += state.get("reserved", 0) + state.get("in_flight", 0)
        drift += abs(state.get("spent", 0) - ledger)
        redis.delete(key)
    return {"overspend": overspend, "leaks": leaks, "drift": drift}


def reservations(env: dict) -> list[Result]:
    from django.db import connection
    from django.utils import timezone

    from budgets.actions import periods, prices
    from budgets.models import Budget

    Budget.objects.filter(enabled=True).update(enabled=False)  # only the bench budget applies
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_budgets_lock (id int PRIMARY KEY, n bigint NOT NULL)")
        cursor.execute("INSERT INTO bench_budgets_lock VALUES (1, 0)")
    lua_keys: dict[str, int] = {}
    rates: dict[str, list[float]] = {
        "lifecycle": [],
        "admitted": [],
        "reserve": [],
        "bare": [],
        "lua": [],
        "onestmt": [],
    }
    totals = {"admitted": 0, "refused": 0, "reserve_refused": 0, "lua_refused": 0}
    clients = Clients(env)
    try:
        counter = iter(range(10_000))

        def lifecycle(n: int, measured: bool = True) -> None:
            _new_budget(f"bench lifecycle {next(counter)}", _cap(n))
            elapsed, counts = clients.round(_command("lifecycle", n))
            if measured:
                rates["lifecycle"].append((counts["ok"] + counts["refused"]) / elapsed)
                rates["admitted"].append(counts["ok"] / elapsed)
                totals["admitted"] += counts["ok"]
                totals["refused"] += counts["refused"]

        def reserve_only(n: int, measured: bool = True) -> None:
            _new_budget(f"bench reserve {next(counter)}", _cap(n))
            elapsed, counts = clients.round(_command("reserve", n))
            clients.round(_command("release", 0))  # untimed: give every held reservation back
            if measured:
                rates["reserve"].append((counts["ok"] + counts["refused"]) / elapsed)
                totals["reserve_refused"] += counts["refused"]

        def bare(n: int, measured: bool = True) -> None:
            elapsed, counts = clients.round(_command("bare", n))
            if measured:
                rates["bare"].append(counts["ok"] / elapsed)

        def lua(n: int, measured: bool = True) -> None:
            key = f"agentops:bench:budgets:{os.getpid()}:{next(counter)}"
            lua_keys[key] = _cap(n)
            elapsed, counts = clients.round(_command("lua", n, key=key, cap=_cap(n)))
            if measured:
                rates["lua"].append((counts["ok"] + counts["refused"]) / elapsed)
                totals["lua_refused"] += counts["refused"]

        def onestmt(n: int, measured: bool = True) -> None:
            budget = _new_budget(f"bench onestmt {next(counter)}", _cap(n))
            price = prices.price_in_force(MODEL, timezone.now())
            with connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO budgets_budgetcounter (budget_id, subject, period_start, spent_tokens, spent_usd,"
                    " reserved_tokens, reserved_usd, in_flight, updated_at) VALUES (%s, '', %s, 0, 0, 0, 0, 0, now())"
                    " RETURNING id",
                    [budget.pk, periods.LIFETIME_START],
                )
                counter_id = cursor.fetchone()[0]
            elapsed, counts = clients.round(
                _command(
                    "onestmt",
                    n,
                    counter_ids=[counter_id],
                    price_in=str(price.input_per_1k),
                    price_out=str(price.output_per_1k),
                )
            )
            if measured:
                rates["onestmt"].append((counts["ok"] + counts["refused"]) / elapsed)

        modes = [
            ("lifecycle", lifecycle),
            ("bare", bare),
            ("lua", lua),
            ("reserve", reserve_only),
            ("onestmt", onestmt),
        ]
        for _, fn in modes:
            fn(WARMUP_ATTEMPTS, measured=False)
        for index in range(ROUNDS):  # every mode once per round, in a rotating order
            for name, fn in modes[index % len(modes) :] + modes[: index % len(modes)]:
                fn(ATTEMPTS[name])
    finally:
        clients.close()
    pg, redis_audit = audit_postgres(), audit_lua(lua_keys)
    med = {name: statistics.median(values) for name, values in rates.items()}
    print(
        f"  postgres: overspend {pg['overspend']} tokens, leaks {pg['leaks']}, counter/ledger drift {pg['drift']} "
        f"over {pg['budgets']} budgets; admitted {totals['admitted']}, refused {totals['refused']}",
        flush=True,
    )
    print(
        f"  redis lua: overspend {redis_audit['overspend']} tokens, leaks {redis_audit['leaks']}, "
        f"drift {redis_audit['drift']}",
        flush=True,
    )
    print("  rounds (per s): " + "; ".join(f"{k} " + ", ".join(f"{v:.0f}" for v in vs) for k, vs in rates.items()))
    clean = pg["overspend"] == 0 and pg["leaks"] == 0 and pg["drift"] == 0
    clients_text = f"{CLIENT_PROCS * CLIENT_THREADS} clients ({CLIENT_PROCS} procs x {CLIENT_THREADS} threads)"
    return [
        Result(
            "budgets: reserve+settle/s, 64 clients, 1 budget (vs bare row lock)",
            "resv/s",
            med["lifecycle"],
            med["bare"],
            "ratio >= 0.50, 0 overspend, 0 leaks",
            med["lifecycle"] / med["bare"] >= 0.50 and clean,
            note=f"{clients_text}; {ROUNDS} rotated rounds; medians; attempts/s, a refusal is one attempt; admitted "
            f"{med['admitted']:.0f}/s ({totals['admitted']} admitted, {totals['refused']} refused); overspend "
            f"{pg['overspend']}, leaks {pg['leaks']}, counter/ledger drift {pg['drift']}",
        ),
        Result(
            "budgets: reserve-only/s, 64 clients, 1 budget (vs bare row lock)",
            "resv/s",
            med["reserve"],
            med["bare"],
            "informational",
            clean,
            note=f"{totals['reserve_refused']} refused; every hold released after its round (untimed)",
        ),
        Result(
            "budgets: Redis Lua reserve+ledger+settle/s (vs PG reserve+settle)",
            "resv/s",
            med["lua"],
            med["lifecycle"],
            "informational",
            redis_audit["overspend"] == 0 and redis_audit["leaks"] == 0,
            note=f"Lua check-and-incr on a Redis hash, ledger INSERT in PostgreSQL, Lua settle; overspend "
            f"{redis_audit['overspend']}, leaks {redis_audit['leaks']}, drift {redis_audit['drift']}",
        ),
        Result(
            "budgets: one-statement reserve+settle/s prototype (vs bare row lock)",
            "resv/s",
            med["onestmt"],
            med["bare"],
            "informational",
            clean,
            note="reserve and settle as one SQL statement each (autocommit, same tables, counters locked in id "
            "order inside the statement), budget and price from a per-process cache: the row lock is held for "
            "no client round trip; audited with the rest",
        ),
    ]


# --- 2. scale: the cost pages at 1M usage rows -----------------------------------------------------

_SEED = """
INSERT INTO budgets_usagerecord
    (agent, run_id, session_id, model, provider, operation, input_tokens, output_tokens, cached_tokens, cost_usd,
     price_id, cached, reservation_id, source, rolled_up, created_at)
SELECT 'agent-' || (s %% 8), 1000000 + s / 4, 'sess-' || s, (ARRAY['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet'])[1 + m],
       'openai', (ARRAY['planning', 'tool_calls', 'response', 'reflection'])[1 + g %% 4], i, o, 0,
       CASE WHEN c THEN 0 ELSE round((i * (ARRAY[0.0025, 0.00015, 0.003])[1 + m]
                                     + o * (ARRAY[0.01, 0.0006, 0.015])[1 + m]) / 1000, 8) END,
       NULL, c, NULL, 'run', false,
       %(start)s::timestamptz + ((g - %(first)s) * %(step)s) * interval '1 second'
FROM (SELECT g, g / 20 AS s, (g / 20) %% 3 AS m, 200 + (g * 7919) %% 1800 AS i, 50 + (g * 104729) %% 700 AS o,
             g %% 10 = 0 AS c
      FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g) AS x
"""


def _seed(first: int, last: int, start, end) -> None:
    from django.db import connection, transaction

    step = (end - start).total_seconds() / max(last - first + 1, 1)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_SEED, {"first": first, "last": last, "start": start, "step": step})


def _grow_to(rows: int, have: int) -> tuple[int, float, float]:
    """Grow the ledger from `have` to `rows` rows: history over 30 days (rolled up), then a TAIL of recent
    rows left un-rolled. Returns (rows rolled up, seed seconds, rollup seconds)."""
    import datetime as dt

    from django.db import connection
    from django.utils import timezone

    from budgets.actions import rollups

    now = timezone.now()
    started = time.perf_counter()
    _seed(have + 1, rows - TAIL, now - dt.timedelta(days=30), now - dt.timedelta(minutes=15))
    seeded = time.perf_counter() - started
    started = time.perf_counter()
    rolled = rollups.roll_up_usage()
    rollup = time.perf_counter() - started
    _seed(rows - TAIL + 1, rows, now - dt.timedelta(minutes=15), now)
    with connection.cursor() as cursor:  # what autovacuum would have done by now
        for table in ("budgets_usagerecord", "budgets_hourlyusage", "budgets_sessionusage"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return rolled, seeded, rollup


def _page_client():
    from django.test import Client

    from tests.fixtures.people import BEA

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(BEA.user())  # the cast's budget admin
    return client


def _time_pages(client) -> dict[str, list[float] | int]:
    """Per page: server-time samples in ms (in-process Django test Client), or the status if not 200. The
    per-request INFO log line is switched off meanwhile (it would flood the bench output)."""
    logging.disable(logging.INFO)
    try:
        return _time_pages_quietly(client)
    finally:
        logging.disable(logging.NOTSET)


def _time_pages_quietly(client) -> dict[str, list[float] | int]:
    out: dict[str, list[float] | int] = {}
    for _, path in PAGES:
        samples = []
        for index in range(PAGE_WARMUP + PAGE_SAMPLES):
            started = time.perf_counter()
            response = client.get(path)
            took = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                out[path] = response.status_code
                break
            if index >= PAGE_WARMUP:
                samples.append(took)
        else:
            out[path] = samples
    return out


def _reset_for_scale() -> None:
    """Drop what part 1 left (its budgets, reservations and ledger rows); the seeded defaults apply again."""
    from django.db import connection

    from budgets.models import Budget, Reservation, UsageRecord

    Budget.objects.filter(name__startswith="bench ").delete()
    Budget.objects.update(enabled=True)
    Reservation.objects.all().delete()
    UsageRecord.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM budgets_hourlyusage")
        cursor.execute("DELETE FROM budgets_sessionusage")


def scale() -> list[Result]:
    _reset_for_scale()
    client = _page_client()
    small_rolled, small_seed, small_rollup = _grow_to(SMALL, 0)
    print(
        f"  {SMALL} rows: seeded in {small_seed:.1f} s, rolled up {small_rolled} rows in {small_rollup:.2f} s",
        flush=True,
    )
    small = _time_pages(client)
    large_rolled, large_seed, large_rollup = _grow_to(LARGE, SMALL)
    print(
        f"  {LARGE} rows: seeded in {large_seed:.1f} s, rolled up {large_rolled} rows in {large_rollup:.1f} s "
        f"({large_rolled / large_rollup:.0f} rows/s); {TAIL} rows left un-rolled",
        flush=True,
    )
    large = _time_pages(client)
    results = [
        Result(
            f"budgets: roll_up_usage of {large_rolled // 1000}k ledger rows (vs {small_rolled // 1000}k)",
            "s",
            large_rollup,
            small_rollup,
            "informational",
            True,
            note=f"{large_rolled / large_rollup:.0f} rows/s; batches of 50k, one statement each",
        )
    ]
    for _, path in PAGES:
        at_large, at_small = large[path], small[path]
        if isinstance(at_large, int) or isinstance(at_small, int):
            status = at_large if isinstance(at_large, int) else at_small
            print(f"  {path} answered {status}: page not measured", flush=True)
            results.append(
                Result(
                    f"budgets: GET {path} server ms at 1M rows (vs 10k)",
                    "ms",
                    float("nan"),
                    float("nan"),
                    f"< {PAGE_GOAL_MS:.0f} ms at 1M",
                    False,
                    note=f"answered {status}: the page is not installed",
                )
            )
            continue
        p50, base50 = statistics.median(at_large), statistics.median(at_small)
        results.append(
            Result(
                f"budgets: GET {path} server ms at 1M rows (vs 10k)",
                "ms",
                p50,
                base50,
                f"< {PAGE_GOAL_MS:.0f} ms at 1M",
                p50 < PAGE_GOAL_MS,
                p95=percentile(at_large, 95),
                baseline_p95=percentile(at_small, 95),
                note=f"in-process Django test Client as a budget_admin; {PAGE_SAMPLES} requests after "
                f"{PAGE_WARMUP} warm-up; {TAIL} un-rolled rows",
            )
        )
    return results


def run() -> list[Result]:
    parts = os.environ.get("BENCH_BUDGETS_PARTS", "resv,scale").split(",")  # to run one part while tuning
    with bench_database("budgets") as env:
        return (reservations(env) if "resv" in parts else []) + (scale() if "scale" in parts else [])
