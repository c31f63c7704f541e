"""Client process for tests/bench/bench_budgets.py: THREADS client threads, each with its own database
connection (Django connections are per thread) and its own Redis connection, driven by the bench
through JSON lines (stdin: one command per round; the reply goes to the original stdout, logs to stderr).

The same clients run every mode, so the subject and its baselines differ only in what one operation does:

- ``lifecycle``  reserve → settle (budgets.actions), a refusal (BudgetExceeded) counts as a decided attempt
- ``reserve``    reserve only (the held ids are kept for the untimed ``release`` command)
- ``release``    give back every id held by the last ``reserve`` round (untimed cleanup)
- ``bare``       BEGIN; SELECT … FOR UPDATE; UPDATE … SET n = n + 1; COMMIT on a one-row table
- ``lua``        Redis Lua check-and-incr reserve → ledger row in PostgreSQL → Lua settle
- ``onestmt``    a prototype of reserve and settle as ONE statement each (autocommit) on the same tables:
                 the counter row lock is held inside the server only, for no client round trip; the
                 budget's counter id and the price come from the command (what a per-process cache gives)

python -m tests.bench.budgets_clients THREADS CLIENT_OFFSET
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import traceback

RESERVE_LUA = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
if spent + reserved + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'in_flight', 1)
return 1
"""
SETTLE_LUA = """
redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(ARGV[1]))
redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'in_flight', -1)
return 1
"""
BARE_TABLE = "bench_budgets_lock"

# Lock every counter in id order, check every limit, hold on all or none, record the reservation.
ONE_STATEMENT_RESERVE = """
WITH locked AS (
    SELECT c.id, c.spent_tokens, c.reserved_tokens, c.spent_usd, c.reserved_usd, b.limit_tokens, b.limit_usd
    FROM budgets_budgetcounter c JOIN budgets_budget b ON b.id = c.budget_id
    WHERE c.id = ANY(%(ids)s::bigint[]) ORDER BY c.id FOR UPDATE OF c
),
ok AS (
    SELECT bool_and((limit_tokens IS NULL OR spent_tokens + reserved_tokens + %(tokens)s <= limit_tokens)
                    AND (limit_usd IS NULL OR spent_usd + reserved_usd + %(usd)s <= limit_usd)) AS fits
    FROM locked
),
held AS (
    UPDATE budgets_budgetcounter
    SET reserved_tokens = reserved_tokens + %(tokens)s, reserved_usd = reserved_usd + %(usd)s,
        in_flight = in_flight + 1, updated_at = now()
    WHERE id = ANY(%(ids)s::bigint[]) AND (SELECT fits FROM ok)
)
INSERT INTO budgets_reservation
    (counter_ids, agent, run_id, session_id, model, operation, tokens, usd, status, expires_at, created_at)
SELECT to_jsonb(%(ids)s::bigint[]), %(agent)s, %(run_id)s, %(session_id)s, %(model)s, 'response', %(tokens)s,
       %(usd)s, 'held', now() + interval '5 minutes', now()
WHERE (SELECT fits FROM ok)
RETURNING id
"""
# Close the reservation, swap its hold for the actual spend on its counters (locked in id order), write the ledger.
ONE_STATEMENT_SETTLE = """
WITH r AS (
    UPDATE budgets_reservation SET status = 'settled', closed_at = now() WHERE id = %(id)s AND status = 'held'
    RETURNING id, counter_ids, tokens, usd, agent, run_id, session_id, model, operation
),
locked AS (
    SELECT c.id FROM budgets_budgetcounter c
    WHERE c.id IN (SELECT jsonb_array_elements_text(r.counter_ids)::bigint FROM r) ORDER BY c.id FOR UPDATE
),
applied AS (
    UPDATE budgets_budgetcounter c
    SET spent_tokens = spent_tokens + %(spent)s, spent_usd = spent_usd + %(cost)s,
        reserved_tokens = reserved_tokens - r.tokens, reserved_usd = reserved_usd - r.usd,
        in_flight = in_flight - 1, updated_at = now()
    FROM r WHERE c.id IN (SELECT id FROM locked)
)
INSERT INTO budgets_usagerecord
    (agent, run_id, session_id, model, provider, operation, input_tokens, output_tokens, cached_tokens, cost_usd,
     cached, reservation_id, source, rolled_up, created_at)
SELECT r.agent, r.run_id, r.session_id, r.model, 'bench', r.operation, %(in)s, %(out)s, 0, %(cost)s,
       false, r.id, 'run', false, now()
FROM r RETURNING id
"""


def usage_for(client: int, i: int, est_in: int, est_out: int) -> tuple[int, int]:
    """Actual usage at or below the estimate (deterministic, varied)."""
    return est_in - (client * 7 + i * 13) % 60, est_out - (client * 11 + i * 17) % 40


class ClientThread(threading.Thread):
    def __init__(self, number: int, results: queue.Queue):
        super().__init__(daemon=True)
        self.number = number
        self.commands: queue.Queue = queue.Queue()
        self.results = results
        self.held: list[int] = []

    def run(self) -> None:
        import redis
        from django.conf import settings
        from django.db import connection

        self.redis = redis.Redis.from_url(settings.REDIS_URL, single_connection_client=True)
        self.reserve_lua = self.redis.register_script(RESERVE_LUA)
        self.settle_lua = self.redis.register_script(SETTLE_LUA)
        with connection.cursor() as cursor:  # open this thread's connection before the first round
            cursor.execute("SELECT 1")
        self.redis.ping()
        while True:
            command = self.commands.get()
            if command is None:
                connection.close()
                return
            counts = {"ok": 0, "refused": 0, "errors": 0, "first_error": ""}
            try:
                getattr(self, f"do_{command['mode']}")(command, counts)
            except Exception as exc:  # one broken client must not hang the round
                counts["errors"] += 1
                counts["first_error"] = counts["first_error"] or "".join(traceback.format_exception_only(exc))
            self.results.put(counts)

    def _count_error(self, counts: dict, exc: BaseException) -> None:
        counts["errors"] += 1
        counts["first_error"] = counts["first_error"] or "".join(traceback.format_exception_only(exc)).strip()

    def _meta(self, command: dict, i: int) -> dict:
        return {
            "agent": command["agent"],
            "session": f"bench-{self.number}-{i // 10}",
            "run": self.number * 100_000 + i,
            "operation": "response",
            "model": command["model"],
            "estimated_input_tokens": command["est_in"],
            "estimated_output_tokens": command["est_out"],
        }

    def do_lifecycle(self, command: dict, counts: dict) -> None:
        from agentops.runtime.protocols import BudgetExceeded
        from budgets.actions import ledger, reservations

        for i in range(command["n"]):
            try:
                reservation = reservations.reserve(self._meta(command, i))
            except BudgetExceeded:
                counts["refused"] += 1
                continue
            except Exception as exc:
                self._count_error(counts, exc)
                continue
            used_in, used_out = usage_for(self.number, i, command["est_in"], command["est_out"])
            try:
                ledger.settle(
                    reservation,
                    {
                        "input_tokens": used_in,
                        "output_tokens": used_out,
                        "model": command["model"],
                        "provider": "bench",
                    },
                )
                counts["ok"] += 1
            except Exception as exc:
                self._count_error(counts, exc)

    def do_reserve(self, command: dict, counts: dict) -> None:
        from agentops.runtime.protocols import BudgetExceeded
        from budgets.actions import reservations

        for i in range(command["n"]):
            try:
                self.held.append(reservations.reserve(self._meta(command, i)))
                counts["ok"] += 1
            except BudgetExceeded:
                counts["refused"] += 1
            except Exception as exc:
                self._count_error(counts, exc)

    def do_release(self, command: dict, counts: dict) -> None:
        from budgets.actions import reservations

        held, self.held = self.held, []
        for reservation in held:
            try:
                counts["ok" if reservations.release(reservation) else "refused"] += 1
            except Exception as exc:
                self._count_error(counts, exc)

    def do_bare(self, command: dict, counts: dict) -> None:
        from django.db import connection, transaction

        for _ in range(command["n"]):
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(f"SELECT n FROM {BARE_TABLE} WHERE id = 1 FOR UPDATE")
                    cursor.fetchone()
                    cursor.execute(f"UPDATE {BARE_TABLE} SET n = n + 1 WHERE id = 1")
                counts["ok"] += 1
            except Exception as exc:
                self._count_error(counts, exc)

    def do_onestmt(self, command: dict, counts: dict) -> None:
        from decimal import Decimal

        from django.db import connection

        price_in, price_out = Decimal(command["price_in"]), Decimal(command["price_out"])
        est_usd = (command["est_in"] * price_in + command["est_out"] * price_out) / 1000
        for i in range(command["n"]):
            meta = self._meta(command, i)
            try:
                with connection.cursor() as cursor:  # autocommit: each statement is its own transaction
                    cursor.execute(
                        ONE_STATEMENT_RESERVE,
                        {
                            "ids": command["counter_ids"],
                            "tokens": command["est_in"] + command["est_out"],
                            "usd": est_usd,
                            "agent": meta["agent"],
                            "run_id": meta["run"],
                            "session_id": meta["session"],
                            "model": meta["model"],
                        },
                    )
                    row = cursor.fetchone()
                    if row is None:
                        counts["refused"] += 1
                        continue
                    used_in, used_out = usage_for(self.number, i, command["est_in"], command["est_out"])
                    cost = ((used_in * price_in + used_out * price_out) / 1000).quantize(Decimal("0.00000001"))
                    cursor.execute(
                        ONE_STATEMENT_SETTLE,
                        {"id": row[0], "spent": used_in + used_out, "cost": cost, "in": used_in, "out": used_out},
                    )
                counts["ok"] += 1
            except Exception as exc:
                self._count_error(counts, exc)

    def do_lua(self, command: dict, counts: dict) -> None:
        from django.utils import timezone

        from budgets.models import UsageRecord

        key, est = command["key"], command["est_in"] + command["est_out"]
        for i in range(command["n"]):
            try:
                if not self.reserve_lua(keys=[key], args=[est, command["cap"]]):
                    counts["refused"] += 1
                    continue
                used_in, used_out = usage_for(self.number, i, command["est_in"], command["est_out"])
                UsageRecord.objects.create(
                    agent=command["agent"],
                    session_id=f"bench-{self.number}-{i // 10}",
                    model=command["model"],
                    provider=key[-20:],
                    operation="response",
                    input_tokens=used_in,
                    output_tokens=used_out,
                    source="lua-bench",
                    created_at=timezone.now(),
                )
                self.settle_lua(keys=[key], args=[est, used_in + used_out])
                counts["ok"] += 1
            except Exception as exc:
                self._count_error(counts, exc)


def main(argv: list[str]) -> int:
    threads, offset = int(argv[0]), int(argv[1])
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed (logs) goes to stderr, not into the replies
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentops.settings")
    import django

    django.setup()
    results: queue.Queue = queue.Queue()
    clients = [ClientThread(offset + n, results) for n in range(threads)]
    for client in clients:
        client.start()
    reply.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("mode") == "quit":
            break
        started = time.perf_counter()
        for client in clients:
            client.commands.put(command)
        total = {"ok": 0, "refused": 0, "errors": 0, "first_error": ""}
        for _ in clients:
            counts = results.get()
            for field in ("ok", "refused", "errors"):
                total[field] += counts[field]
            total["first_error"] = total["first_error"] or counts["first_error"]
        total["elapsed"] = time.perf_counter() - started
        reply.write(json.dumps(total) + "\n")
    for client in clients:
        client.commands.put(None)
    for client in clients:
        client.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
