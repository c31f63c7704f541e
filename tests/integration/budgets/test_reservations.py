"""The budget core on real PostgreSQL: reservations under concurrency from several OS processes, all-or-nothing
across budgets, leases of killed callers, fail closed, periods in a budget's time zone, prices in force,
per-operation limits and alert-only budgets (DESIGN.md §7)."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from agentops.runtime.config import RuntimeConfig, StaticConfigSource
from agentops.runtime.errors import FallbackExhausted
from agentops.runtime.guard import GuardDeps, guarded_llm
from agentops.runtime.protocols import BudgetExceeded, BudgetUnavailable
from agentops.runtime.providers import LLMRequest
from agentops.runtime.providers.simulated import SimulatedProvider
from agentops.runtime.routing import Route, Target
from budgets.actions import budgets as budget_actions
from budgets.actions import ledger as ledger_actions
from budgets.actions import periods, prices, reservations
from budgets.actions import reservations as reservation_actions
from budgets.gate import BUDGET_GATE, USAGE_SINK
from budgets.models import Budget, BudgetCounter, ModelPrice, Reservation, UsageRecord
from tests.fixtures.factories import make_budget
from tests.fixtures.runtime import REPO_ROOT, free_port
from tests.fixtures.stack import database_url_for
from tests.fixtures.waiting import wait_for
from tests.integration.budgets.conftest import (
    assert_balanced,
    counter_of,
    counters_of,
    held_reservations,
    ledger,
)

UTC = dt.UTC


def meta(tokens_in: int = 60, tokens_out: int = 40, **fields) -> dict:
    return {
        "operation": "planning",
        "model": "gpt-4o",
        "estimated_input_tokens": tokens_in,
        "estimated_output_tokens": tokens_out,
        **fields,
    }


def usage(tokens_in: int, tokens_out: int, **fields) -> dict:
    return {"input_tokens": tokens_in, "output_tokens": tokens_out, "model": "gpt-4o", **fields}


# --- 1000 concurrent reservations from 4 processes × 5 threads ---------------------------------------

# One child process: phase 1 holds as many reservations as fit (every thread starts together), reports, and
# waits for the parent's "go" on stdin (so all processes' reservations are held at once); phase 2 settles
# them (less than estimated, exactly as estimated, or released) while phase 3 reserves and settles more.
CHILD = textwrap.dedent(
    """
    import json, os, sys, threading
    import django
    django.setup()
    from django.db import connection
    from budgets.actions import ledger as ledger_actions, reservations
    from agentops.runtime.protocols import BudgetExceeded

    proc, threads, per_thread, extra, outdir = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), \\
        int(sys.argv[4]), sys.argv[5]
    AGENTS = ("amy", "bob", "cy")
    errors, held = [], [[] for _ in range(threads)]
    refused, extra_admitted, extra_refused = [0] * threads, [0] * threads, [0] * threads
    start = threading.Barrier(threads)

    def meta(t, i):
        return {"agent": AGENTS[(proc + t + i) % 3], "session": f"s{proc}-{t}", "operation": "planning",
                "model": "gpt-4o", "estimated_input_tokens": 60, "estimated_output_tokens": 40}

    def hold(t):
        try:
            start.wait()
            for i in range(per_thread):
                try:
                    held[t].append((i, reservations.reserve(meta(t, i))))
                except BudgetExceeded:
                    refused[t] += 1
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            connection.close()

    def settle_and_go_on(t):
        try:
            start.wait()
            for i, rid in held[t]:
                kind = (proc + t + i) % 3
                if kind == 0:
                    assert reservations.release(rid)
                elif kind == 1:  # used less than estimated
                    ledger_actions.settle(rid, {"input_tokens": 55, "output_tokens": i % 30, "model": "gpt-4o"})
                else:
                    ledger_actions.settle(rid, {"input_tokens": 60, "output_tokens": 40, "model": "gpt-4o"})
            for i in range(extra):
                try:
                    rid = reservations.reserve(meta(t, i))
                except BudgetExceeded:
                    extra_refused[t] += 1
                    continue
                extra_admitted[t] += 1
                ledger_actions.settle(rid, {"input_tokens": 30, "output_tokens": 20, "model": "gpt-4o"})
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            connection.close()

    def run_all(target):
        workers = [threading.Thread(target=target, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def report(name, data):
        path = os.path.join(outdir, f"{name}-{proc}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)

    run_all(hold)
    report("held", {"admitted": sum(map(len, held)), "refused": sum(refused), "errors": errors})
    sys.stdin.readline()
    run_all(settle_and_go_on)
    report("final", {"extra_admitted": sum(extra_admitted), "extra_refused": sum(extra_refused),
                     "errors": errors})
    """
)

PROCESSES, THREADS, PER_THREAD, EXTRA = 4, 5, 50, 15
ESTIMATE = 100  # tokens per reservation (60 in + 40 out)
CAP = 43_750  # room for 437 estimates, with 50 tokens left over


def reports(paths: list[Path], procs: list[subprocess.Popen], what: str) -> Callable[[], list[dict] | None]:
    """A predicate for wait_for: the children's JSON reports once every one of ``paths`` is written;
    AssertionError at once when a child failed before that."""

    def written() -> list[dict] | None:
        if all(p.exists() for p in paths):
            return [json.loads(p.read_text()) for p in paths]
        for proc in procs:
            if proc.poll() not in (None, 0):
                raise AssertionError(f"a child exited with {proc.returncode} before {what}: {proc.stderr.read()}")
        return None

    written.describe = lambda: f"the children to report {what}"
    return written


def test_1000_concurrent_reservations_from_four_processes_never_pass_the_cap(budget_db, child_env, tmp_path):
    cap = make_budget("cap", scope="global", period="day", limit_tokens=CAP)
    per_agent = make_budget("per agent", scope="agent", period="day", limit_usd=Decimal("100"))
    per_session = make_budget("per session", scope="session", period="lifetime", limit_tokens=10**9)

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(n), str(THREADS), str(PER_THREAD), str(EXTRA), str(tmp_path)],
            cwd=REPO_ROOT,
            env=child_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    try:
        held_files = [tmp_path / f"held-{n}.json" for n in range(PROCESSES)]
        held = wait_for(reports(held_files, procs, "their reservations"), timeout=120, interval=0.02)
        assert [r["errors"] for r in held] == [[]] * PROCESSES
        admitted = sum(r["admitted"] for r in held)
        assert admitted + sum(r["refused"] for r in held) == PROCESSES * THREADS * PER_THREAD == 1000
        assert admitted == CAP // ESTIMATE  # exactly what fits: no more, and no refusal while there was room
        global_counter = counter_of(cap)
        assert global_counter.reserved_tokens == admitted * ESTIMATE <= CAP
        assert global_counter.in_flight == admitted == held_reservations()
        assert global_counter.spent_tokens == 0
        assert sum(c.reserved_tokens for c in counters_of(per_agent)) == admitted * ESTIMATE
        assert sum(c.in_flight for c in counters_of(per_session)) == admitted

        # Phase 2 and 3 run in every process while this one watches the cap from outside.
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        samples = 0
        while any(proc.poll() is None for proc in procs):
            row = BudgetCounter.objects.get(pk=global_counter.pk)
            assert row.spent_tokens + row.reserved_tokens <= CAP, row
            samples += 1
            time.sleep(0.01)  # leave the two cores to the children
        final_files = [tmp_path / f"final-{n}.json" for n in range(PROCESSES)]
        final = wait_for(reports(final_files, procs, "the end"), timeout=120, interval=0.02)
        assert [proc.returncode for proc in procs] == [0] * PROCESSES
        assert [r["errors"] for r in final] == [[]] * PROCESSES
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    assert samples > 0
    extra_admitted = sum(r["extra_admitted"] for r in final)
    assert extra_admitted + sum(r["extra_refused"] for r in final) == PROCESSES * THREADS * EXTRA
    # Every reservation is closed and every counter is exactly its share of the ledger.
    assert held_reservations() == 0
    statuses = dict(Reservation.objects.values_list("status").annotate(n=Count("id")))
    assert statuses.get("held", 0) == 0
    assert sum(statuses.values()) == admitted + extra_admitted
    assert UsageRecord.objects.count() == statuses["settled"]
    assert_balanced(global_counter)
    assert global_counter.spent_tokens <= CAP
    for agent_counter in counters_of(per_agent):
        assert_balanced(agent_counter, agent=agent_counter.subject)
    assert len(counters_of(per_agent)) == 3
    for session_counter in counters_of(per_session):
        agent, session = session_counter.subject.split("/", 1)
        assert_balanced(session_counter, agent=agent, session_id=session)
    assert len(counters_of(per_session)) == PROCESSES * THREADS * 3  # each thread's session, of each of 3 agents
    # After settle, what was charged is what was used, priced at the price in force.
    price = ModelPrice.objects.get(model="gpt-4o")
    for record in UsageRecord.objects.all()[:50]:
        assert record.cost_usd == prices.cost_of(price, record.input_tokens, record.output_tokens)
        assert record.price_id == price.pk and record.reservation_id is not None


# --- several budgets at once -------------------------------------------------------------------------


def snapshot(*budgets: Budget) -> list[tuple]:
    return [
        (c.budget_id, c.subject, c.spent_tokens, c.reserved_tokens, c.reserved_usd, c.in_flight)
        for b in budgets
        for c in counters_of(b)
    ]


def test_a_refusal_by_one_budget_leaves_every_other_budget_untouched(budget_db):
    everyone = make_budget("everyone", scope="global", limit_tokens=10_000)
    agents = make_budget("agents", scope="agent", limit_tokens=1500, on_block="fail")
    sessions = make_budget("sessions", scope="session", period="lifetime", limit_usd=Decimal("0.0100"))

    first = reservations.reserve(meta(300, 100, agent="amy", session="s1"))  # 400 tokens, $0.00175
    assert first is not None
    assert {(c.budget.name, c.subject) for c in BudgetCounter.objects.select_related("budget")} == {
        ("everyone", ""),
        ("agents", "amy"),
        ("sessions", "amy/s1"),  # a session counts per (agent, session)
    }
    before = snapshot(everyone, agents, sessions)

    # The agent budget (in the middle of the lock order) has no room: nothing is held anywhere.
    with pytest.raises(BudgetExceeded) as refused:
        reservations.reserve(meta(1000, 150, agent="amy", session="s1"))
    assert refused.value.budget == "agents"
    assert 'budget "agents" for agent amy' in str(refused.value) and "1100 of 1500 tokens left" in str(refused.value)
    assert refused.value.escalate is False
    assert snapshot(everyone, agents, sessions) == before
    # The session budget (last in the lock order) refuses on dollars: the same.
    with pytest.raises(BudgetExceeded) as refused:
        reservations.reserve(meta(10, 900, agent="amy", session="s1"))  # $0.009025 > $0.00825 left
    assert refused.value.budget == "sessions" and "$0.0082 of $0.0100 left" in str(refused.value)
    assert "for session s1 of agent amy" in str(refused.value)
    assert snapshot(everyone, agents, sessions) == before
    # The global one (first in the lock order) refuses: the same.
    with pytest.raises(BudgetExceeded) as refused:
        reservations.reserve(meta(9_000, 900, agent="cy", session="s9"))
    assert refused.value.budget == "everyone"
    assert counter_of(everyone).reserved_tokens == 400 and counter_of(everyone).in_flight == 1
    assert held_reservations() == 1

    # Another agent's session of the same id is its own: the call amy's "s1" refused fits bob's "s1".
    second = reservations.reserve(meta(10, 900, agent="bob", session="s1"))
    assert counter_of(sessions, "bob/s1").reserved_usd == Decimal("0.009025")
    reservations.release(second)
    second = reservations.reserve(meta(150, 50, agent="bob", session="s1"))
    ledger_actions.settle(first, usage(250, 50))  # settling frees amy's room again
    third = reservations.reserve(meta(150, 50, agent="amy", session="s1"))
    for rid in (second, third):
        ledger_actions.settle(rid, usage(100, 20))
    assert_balanced(counter_of(everyone))
    assert_balanced(counter_of(agents, "amy"), agent="amy")
    assert_balanced(counter_of(sessions, "amy/s1"), agent="amy", session_id="s1")
    assert_balanced(counter_of(sessions, "bob/s1"), agent="bob", session_id="s1")
    assert counter_of(agents, "amy").spent_tokens == 420


# --- leases ------------------------------------------------------------------------------------------

KILLED_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import django
    django.setup()
    from budgets.actions import reservations

    rid = reservations.reserve({"agent": "amy", "session": "doomed", "operation": "planning", "model": "gpt-4o",
                           "estimated_input_tokens": 700, "estimated_output_tokens": 300}, lease_seconds=0.5)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(rid))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(60)  # killed before it settles
    """
)


def test_the_lease_of_a_killed_caller_is_reclaimed_and_a_late_settle_records_its_spend_once(
    budget_db, child_env, tmp_path
):
    budget = make_budget("daily", scope="global", limit_tokens=1_500)
    out = tmp_path / "rid"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(out)], cwd=REPO_ROOT, env=child_env, stderr=subprocess.PIPE
    )
    try:
        wait_for(reports([out], [proc], "its reservation"), timeout=120, interval=0.02)
        rid = int(out.read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    reservation = Reservation.objects.get(pk=rid)
    assert reservation.status == "held" and counter_of(budget).reserved_tokens == 1_000
    with pytest.raises(BudgetExceeded):  # the dead caller's lease still blocks until it is reclaimed
        reservations.reserve(meta(400, 200))

    wait_for(lambda: timezone.now() > reservation.expires_at, timeout=10, interval=0.05, message="the lease (0.5 s)")
    assert reservation_actions.reclaim_expired() == 1
    assert reservation_actions.reclaim_expired() == 0
    reservation.refresh_from_db()
    assert reservation.status == "expired" and reservation.closed_at is not None
    counter = counter_of(budget)
    assert (counter.reserved_tokens, counter.reserved_usd, counter.in_flight, counter.spent_tokens) == (0, 0, 0, 0)
    assert reservations.release(rid) is False  # nothing left to give back

    # The call did happen after all (a settle arriving late): its spend is recorded, once.
    record = ledger_actions.settle(rid, usage(650, 250, session_id="ignored"))
    assert (record.reservation_id, record.session_id, record.agent) == (rid, "doomed", "amy")
    again = ledger_actions.settle(rid, usage(650, 250))  # a retried settle (say, the API client timed out)
    assert again.pk == record.pk
    assert UsageRecord.objects.filter(reservation_id=rid).count() == 1
    assert Reservation.objects.get(pk=rid).status == "settled"
    assert_balanced(counter_of(budget))
    assert counter_of(budget).spent_tokens == 900
    assert reservations.reclaim_expired() == 0


def test_a_second_settle_of_a_settled_reservation_changes_nothing(budget_db):
    budget = make_budget("daily", scope="global", limit_tokens=10_000)
    rid = reservations.reserve(meta(600, 400))
    first = ledger_actions.settle(rid, usage(500, 300))
    second = ledger_actions.settle(rid, usage(500, 300))
    assert second.pk == first.pk and UsageRecord.objects.count() == 1
    assert Reservation.objects.get(pk=rid).status == "settled"
    assert reservations.release(rid) is False
    assert_balanced(counter_of(budget))
    assert counter_of(budget).spent_tokens == 800


def _backends_waiting_for_a_lock(conninfo: str, exclude: int) -> int:
    with psycopg.connect(conninfo, autocommit=True) as probe:
        return probe.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
            "AND pid <> %s",
            [exclude],
        ).fetchone()[0]


def test_reclaiming_takes_the_counter_locks_in_the_same_order_as_a_reservation(budget_db):
    """A beat reclaim of several leases must not deadlock with a reservation that locks counters in id order."""
    agents = make_budget("agents", scope="agent", period="lifetime", limit_tokens=10**6)
    sessions = make_budget("sessions", scope="session", period="lifetime", limit_tokens=10**6)
    reservations.release(reservations.reserve(meta(agent="zed")))  # counter: agents/zed (lowest id)
    past = timezone.now() - dt.timedelta(hours=1)
    r1 = reservations.reserve(meta(agent="amy", session="s1"), lease_seconds=1, now=past)  # agents/amy, sessions/s1
    r2 = reservations.reserve(meta(agent="zed", session="s2"), lease_seconds=1, now=past)  # agents/zed, sessions/s2
    zed, s1 = counter_of(agents, "zed"), counter_of(sessions, "amy/s1")
    assert zed.pk < counter_of(agents, "amy").pk < s1.pk < counter_of(sessions, "zed/s2").pk

    conninfo = database_url_for(connection.settings_dict)
    outcome: dict = {}
    # A reservation for agent zed in session s1 locks [zed, s1] in id order; it has locked zed...
    with psycopg.connect(conninfo) as other:
        other.execute("SET lock_timeout = '10s'")
        other.execute("SELECT id FROM budgets_budgetcounter WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [[zed.pk]])
        other_pid = other.info.backend_pid

        def reclaim():
            try:
                outcome["reclaimed"] = reservations.reclaim_expired()
            except Exception as exc:
                outcome["error"] = exc
            finally:
                connection.close()

        beat = threading.Thread(target=reclaim)
        beat.start()
        wait_for(
            lambda: _backends_waiting_for_a_lock(conninfo, other_pid) > 0 or not beat.is_alive(),
            timeout=10,
            interval=0.02,
            message="the reclaim to wait for the counter lock",
        )
        # ...and now goes on to s1, while the reclaim waits for zed.
        try:
            other.execute("SELECT id FROM budgets_budgetcounter WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [[s1.pk]])
            other.commit()
        except psycopg.Error as exc:
            outcome["reservation_error"] = exc
        beat.join(20)
    assert "reservation_error" not in outcome and "error" not in outcome, outcome
    assert outcome["reclaimed"] == 2
    assert {Reservation.objects.get(pk=r).status for r in (r1, r2)} == {"expired"}
    for counter in BudgetCounter.objects.all():
        assert (counter.reserved_tokens, counter.in_flight) == (0, 0)


# --- fail closed -------------------------------------------------------------------------------------


def test_a_dropped_database_connection_fails_closed_and_admits_nothing(budget_db):
    make_budget("daily", scope="global", limit_tokens=10_000)
    reservations.release(reservations.reserve(meta()))  # the connection is open and works
    before = Reservation.objects.count()
    conninfo = database_url_for(connection.settings_dict)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with psycopg.connect(conninfo, autocommit=True) as admin:  # the server drops this process's connection
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
    try:
        with pytest.raises(BudgetUnavailable, match=r"budget store \(PostgreSQL\) is unreachable, so no call is"):
            reservations.reserve(meta())
    finally:
        connection.close()
    assert Reservation.objects.count() == before
    assert held_reservations() == 0


@pytest.fixture
def unreachable_database():
    """This process's database connection pointed at a closed loopback port (a real refused connection)."""
    saved = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["PORT"] = saved


def test_an_unreachable_database_makes_the_guard_fail_the_call_without_calling_the_model(budget_db, request):
    make_budget("daily", scope="global", limit_tokens=10_000)
    provider = SimulatedProvider("sim")
    config = RuntimeConfig(routes=(Route("planning", (Target("sim", "gpt-4o"),)),), default_chain=())
    deps = GuardDeps(config=StaticConfigSource(config), providers={"sim": provider}, budget=BUDGET_GATE)
    ask = LLMRequest([{"role": "user", "content": "plan a trip"}], operation="planning", max_tokens=50)
    assert guarded_llm(ask, deps=deps).text and provider.calls == 1  # reachable: reserved, answered, settled

    request.getfixturevalue("unreachable_database")
    with pytest.raises(BudgetUnavailable) as failed:
        guarded_llm(ask, deps=deps)
    assert "unreachable" in str(failed.value) and "connection" in str(failed.value).lower()
    with pytest.raises(BudgetUnavailable):
        reservations.reserve(meta())
    assert provider.calls == 1  # the model was never asked: nothing admitted unchecked


def test_after_the_outage_the_guard_admits_again_and_nothing_was_recorded_meanwhile(budget_db):
    make_budget("daily", scope="global", limit_tokens=10_000)
    deps = GuardDeps(
        config=StaticConfigSource(
            RuntimeConfig(routes=(Route("planning", (Target("sim", "gpt-4o"),)),), default_chain=())
        ),
        providers={"sim": SimulatedProvider("sim")},
        budget=BUDGET_GATE,
        usage=USAGE_SINK,
    )
    ask = LLMRequest([{"role": "user", "content": "plan a trip"}], operation="planning", max_tokens=50)
    saved = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        with pytest.raises(BudgetUnavailable):
            guarded_llm(ask, deps=deps)
    finally:
        connection.close()
        connection.settings_dict["PORT"] = saved
    assert (Reservation.objects.count(), UsageRecord.objects.count()) == (0, 0)
    result = guarded_llm(ask, deps=deps)
    record = UsageRecord.objects.get()
    assert (record.model, record.input_tokens, record.output_tokens) == (
        "gpt-4o",
        result.input_tokens,
        result.output_tokens,
    )
    assert Reservation.objects.get().status == "settled"


# --- periods -----------------------------------------------------------------------------------------


def spend(tokens: int, at: dt.datetime, **fields) -> int:
    """Reserve and settle one call of ``tokens`` (all output) at ``at``; returns the reservation id."""
    rid = reservations.reserve(meta(0, tokens, **fields), now=at)
    ledger_actions.settle(rid, usage(0, tokens), now=at)
    return rid


def counter_starts(budget: Budget) -> list[tuple[dt.datetime, int]]:
    return [(c.period_start, c.spent_tokens) for c in counters_of(budget)]


def local(zone: str, *args) -> dt.datetime:
    from zoneinfo import ZoneInfo

    return dt.datetime(*args, tzinfo=ZoneInfo(zone))


def test_a_day_budget_rolls_over_at_midnight_in_its_time_zone(budget_db):
    tokyo = make_budget("tokyo day", scope="global", period="day", timezone="Asia/Tokyo", limit_tokens=1_000)
    spend(900, local("Asia/Tokyo", 2025, 6, 30, 23, 59, 30))  # 14:59:30 UTC
    with pytest.raises(BudgetExceeded, match=r'budget "tokyo day" \(day\) has 100 of 1000 tokens left'):
        reservations.reserve(meta(0, 500), now=local("Asia/Tokyo", 2025, 6, 30, 23, 59, 50))
    spend(500, local("Asia/Tokyo", 2025, 7, 1, 0, 0, 10))  # a new day: the whole limit again
    assert counter_starts(tokyo) == [
        (dt.datetime(2025, 6, 29, 15, tzinfo=UTC), 900),
        (dt.datetime(2025, 6, 30, 15, tzinfo=UTC), 500),
    ]
    # The same instants in a UTC day budget fall on one day.
    utc = make_budget("utc day", scope="global", period="day", timezone="UTC", limit_tokens=10**6)
    spend(7, local("Asia/Tokyo", 2025, 6, 30, 23, 59, 30))
    spend(8, local("Asia/Tokyo", 2025, 7, 1, 0, 0, 10))
    assert counter_starts(utc) == [(dt.datetime(2025, 6, 30, tzinfo=UTC), 15)]


def test_day_periods_on_the_dst_days_of_new_york_are_23_and_25_hours_long(budget_db):
    ny = make_budget("ny day", scope="global", period="day", timezone="America/New_York", limit_tokens=10**6)
    zone = "America/New_York"
    # Spring forward (2025-03-09): midnight EST starts the day, midnight EDT 23 hours later ends it.
    spend(1, local(zone, 2025, 3, 8, 23, 59, 59))
    spend(2, local(zone, 2025, 3, 9, 0, 0, 1))
    spend(4, local(zone, 2025, 3, 9, 3, 30))  # just after the gap (EDT)
    spend(8, local(zone, 2025, 3, 9, 23, 59, 59))
    spend(16, local(zone, 2025, 3, 10, 0, 0, 1))
    # Fall back (2025-11-02): the day has 25 hours; 01:30 happens twice and both are the same day.
    spend(32, local(zone, 2025, 11, 2, 0, 0, 1))
    spend(64, local(zone, 2025, 11, 2, 1, 30).replace(fold=1))
    spend(128, local(zone, 2025, 11, 2, 23, 59, 59))
    spend(256, local(zone, 2025, 11, 3, 0, 0, 1))
    assert counter_starts(ny) == [
        (dt.datetime(2025, 3, 8, 5, tzinfo=UTC), 1),
        (dt.datetime(2025, 3, 9, 5, tzinfo=UTC), 2 + 4 + 8),
        (dt.datetime(2025, 3, 10, 4, tzinfo=UTC), 16),
        (dt.datetime(2025, 11, 2, 4, tzinfo=UTC), 32 + 64 + 128),
        (dt.datetime(2025, 11, 3, 5, tzinfo=UTC), 256),
    ]
    spring = local(zone, 2025, 3, 9, 12)
    assert periods.period_end(ny, spring) - periods.period_start(ny, spring) == dt.timedelta(hours=23)
    autumn = local(zone, 2025, 11, 2, 12)
    assert periods.period_end(ny, autumn) - periods.period_start(ny, autumn) == dt.timedelta(hours=25)


def test_month_and_lifetime_periods(budget_db):
    month = make_budget("tokyo month", scope="global", period="month", timezone="Asia/Tokyo", limit_tokens=10**6)
    forever = make_budget("lifetime", scope="global", period="lifetime", timezone="Asia/Tokyo", limit_tokens=10**6)
    spend(1, dt.datetime(2025, 1, 31, 14, 59, 59, tzinfo=UTC))  # Jan 31 23:59:59 in Tokyo
    spend(2, dt.datetime(2025, 1, 31, 15, 0, 1, tzinfo=UTC))  # Feb 1 in Tokyo
    spend(4, dt.datetime(2025, 2, 28, 14, 59, 59, tzinfo=UTC))  # Feb 28 23:59:59 in Tokyo
    spend(8, dt.datetime(2024, 12, 31, 15, 0, 0, tzinfo=UTC))  # Jan 1 00:00 in Tokyo, the year before's UTC
    assert counter_starts(month) == [
        (dt.datetime(2024, 12, 31, 15, tzinfo=UTC), 1 + 8),
        (dt.datetime(2025, 1, 31, 15, tzinfo=UTC), 2 + 4),
    ]
    assert counter_starts(forever) == [(periods.LIFETIME_START, 15)]
    assert periods.period_end(forever, timezone.now()) is None
    at = dt.datetime(2025, 2, 10, tzinfo=UTC)
    assert periods.period_end(month, at) == dt.datetime(2025, 2, 28, 15, tzinfo=UTC)


# --- prices ------------------------------------------------------------------------------------------


def test_a_price_change_mid_day_prices_later_calls_only(budget_db):
    budget = make_budget("daily", scope="global", limit_usd=Decimal("10"))
    day = dt.datetime(2025, 5, 1, tzinfo=UTC)
    old = prices.set_price(
        "acme-1", Decimal("0.001"), Decimal("0.002"), cached_input_per_1k=Decimal("0.0005"), effective_from=day
    )
    new = prices.set_price("acme-1", Decimal("0.004"), Decimal("0.008"), effective_from=day + dt.timedelta(hours=12))

    def call(at: dt.datetime) -> UsageRecord:
        rid = reservations.reserve(meta(1_000, 500, model="acme-1"), now=at)
        return ledger_actions.settle(rid, usage(1_000, 500, model="acme-1", cached_tokens=400), now=at)

    morning = call(day + dt.timedelta(hours=11, minutes=59))
    # 600 uncached × $0.001 + 400 cached × $0.0005 + 500 out × $0.002, per 1K
    assert (morning.price_id, morning.cost_usd) == (old.pk, Decimal("0.0018"))
    afternoon = call(day + dt.timedelta(hours=12))
    # the new row has no cached price: cached input costs the input price
    assert (afternoon.price_id, afternoon.cost_usd) == (new.pk, Decimal("0.0080"))
    morning.refresh_from_db()
    assert morning.cost_usd == Decimal("0.0018")  # an earlier call keeps what it was charged
    assert counter_of(budget).spent_usd == Decimal("0.0098")
    # The reservation's estimate is priced at reserve time too.
    rid = reservations.reserve(meta(1_000, 500, model="acme-1"), now=day + dt.timedelta(hours=1))
    assert Reservation.objects.get(pk=rid).usd == Decimal("0.002")
    reservations.release(rid)
    # A model without a price row of its own is priced by the catch-all row.
    other = ledger_actions.record_usage(usage(1_000, 1_000, model="unlisted-model"), now=day)
    assert other.price.model == "*" and other.cost_usd == Decimal("0.003")
    with pytest.raises(Exception, match="already exists"):  # a row is never edited in place
        prices.set_price("acme-1", Decimal("1"), Decimal("1"), effective_from=day)


def test_a_new_price_applies_from_now_on_in_real_time(budget_db):
    make_budget("daily", scope="global", limit_tokens=10**6)
    before = ledger_actions.settle(reservations.reserve(meta(1_000, 1_000)), usage(1_000, 1_000))
    assert before.cost_usd == Decimal("0.0125")  # gpt-4o: 1K × $0.0025 + 1K × $0.01
    prices.set_price("gpt-4o", Decimal("0.005"), Decimal("0.02"))  # from now
    after = ledger_actions.settle(reservations.reserve(meta(1_000, 1_000)), usage(1_000, 1_000))
    assert after.cost_usd == Decimal("0.025")
    before.refresh_from_db()
    assert before.cost_usd == Decimal("0.0125")


def test_cached_tokens_get_the_cached_price_and_cache_hits_cost_nothing(budget_db):
    budget = make_budget("daily", scope="global", limit_tokens=10**6)
    rid = reservations.reserve(meta(2_000, 500))
    record = ledger_actions.settle(rid, usage(2_000, 500, cached_tokens=1_500))
    # 500 × $0.0025 + 1500 × $0.00125 + 500 × $0.01, per 1K
    assert record.cost_usd == Decimal("0.008125") and record.cached_tokens == 1_500 and not record.cached
    hit = ledger_actions.record_usage(usage(2_000, 500, agent="amy", cache_hit=True, operation="classify"))
    assert (hit.cached, hit.cost_usd, hit.price_id, hit.operation, hit.agent) == (True, 0, None, "classify", "amy")
    counter = counter_of(budget)
    assert counter.spent_tokens == 2_500 and counter.spent_usd == Decimal("0.008125")  # the hit used no budget
    assert ledger()["usd"] == Decimal("0.008125")


# --- per-operation limits and alert-only budgets -----------------------------------------------------


def test_a_per_operation_limit_refuses_one_oversized_call_and_admits_normal_ones(budget_db):
    make_budget(
        "ops",
        scope="global",
        limit_tokens=10**6,
        operation_limits={"planning": 1_000, "reflection": 500},
        on_block="fail",
    )
    assert reservations.reserve(meta(200, 800)) is not None  # exactly the limit
    with pytest.raises(BudgetExceeded) as refused:
        reservations.reserve(meta(200, 801))
    assert refused.value.budget == "ops"
    assert str(refused.value) == (
        'budget "ops" (day) allows at most 1000 tokens per planning call; this call would use up to 1001'
    )
    assert reservations.reserve(meta(100, 300, operation="reflection")) is not None
    with pytest.raises(BudgetExceeded, match="at most 500 tokens per reflection call"):
        reservations.reserve(meta(100, 401, operation="reflection"))
    assert reservations.reserve(meta(5_000, 5_000, operation="response")) is not None  # no limit for this one
    assert held_reservations() == 3
    # A budget with only per-operation limits still refuses an oversized call, and holds nothing otherwise.
    Budget.objects.all().delete()
    make_budget("only ops", scope="global", operation_limits={"planning": 100})
    assert reservations.reserve(meta(50, 50)) is None
    with pytest.raises(BudgetExceeded):
        reservations.reserve(meta(50, 51))


def test_an_alert_only_budget_admits_past_its_limit_and_counts_everything(budget_db):
    soft = make_budget("soft", scope="global", limit_tokens=1_000, hard_stop=False)
    hard = make_budget("hard agent", scope="agent", scope_key="amy", limit_tokens=1_000)
    rids = [reservations.reserve(meta(300, 300, agent="bob")) for _ in range(3)]  # 1800 held against 1000
    assert all(rids) and counter_of(soft).reserved_tokens == 1_800
    for rid in rids:
        ledger_actions.settle(rid, usage(300, 300))
    assert counter_of(soft).spent_tokens == 1_800
    assert_balanced(counter_of(soft))
    # For amy the keyed hard budget still refuses; the soft one is left as it was.
    ledger_actions.settle(reservations.reserve(meta(300, 300, agent="amy")), usage(300, 300))
    with pytest.raises(BudgetExceeded) as refused:
        reservations.reserve(meta(300, 300, agent="amy"))
    assert refused.value.budget == "hard agent"
    assert counter_of(soft).spent_tokens == 2_400 and counter_of(soft).in_flight == 0
    assert counter_of(hard, "amy").spent_tokens == 600


def test_no_budget_applies_then_no_reservation_is_held_and_usage_is_still_priced(budget_db):
    make_budget("someone else", scope="agent", scope_key="zoe", limit_tokens=10)
    assert reservations.reserve(meta(agent="amy")) is None
    record = ledger_actions.record_usage(usage(1_000, 0, agent="amy"))
    assert record.cost_usd == Decimal("0.0025") and record.reservation_id is None
    assert BudgetCounter.objects.count() == 0


def test_a_call_settled_after_midnight_counts_in_the_period_it_was_reserved_in(budget_db):
    budget = make_budget("daily", scope="global", limit_tokens=10**6)
    rid = reservations.reserve(meta(0, 100), now=dt.datetime(2025, 4, 1, 23, 59, 59, tzinfo=UTC))
    ledger_actions.settle(rid, usage(0, 80), now=dt.datetime(2025, 4, 2, 0, 0, 5, tzinfo=UTC))
    assert counter_starts(budget) == [(dt.datetime(2025, 4, 1, tzinfo=UTC), 80)]
    assert_balanced(counter_of(budget))


# --- fallbacks and dollar limits -----------------------------------------------------------------------


def guard_with(primary: SimulatedProvider, backup: SimulatedProvider) -> GuardDeps:
    """planning → gpt-4o-mini on ``primary``, then gpt-4o on ``backup``; no rules, no human, no back-off."""
    route = Route(
        "planning",
        (Target(primary.name, "gpt-4o-mini"), Target(backup.name, "gpt-4o")),
        use_rules=False,
        use_human=False,
    )
    return GuardDeps(
        config=StaticConfigSource(RuntimeConfig(routes=(route,), default_chain=())),
        providers={primary.name: primary, backup.name: backup},
        budget=BUDGET_GATE,
        usage=USAGE_SINK,
        sleep=lambda seconds: None,
    )


def test_a_fallback_to_a_pricier_backup_model_cannot_pass_a_dollar_limit(budget_db):
    """The estimate on the cheap primary would fit, the backup's would not: the reservation is priced at the
    dearest model of the chain, and a downgraded call never falls back to the model the budget refused."""
    budget = make_budget("dollars", scope="global", limit_usd=Decimal("0.0005"), on_block="fail")
    down, up = SimulatedProvider("down", fault_rates={"ServiceUnavailable": 1.0}), SimulatedProvider("up")
    steady = SimulatedProvider("steady")
    # ~400 prompt tokens: about $0.00018 on gpt-4o-mini, about $0.001 on gpt-4o before any output
    ask = LLMRequest(
        [{"role": "user", "content": "plan a trip to Lisbon. " * 80}], operation="planning", max_tokens=200
    )
    with pytest.raises(BudgetExceeded) as refused:
        guarded_llm(ask, deps=guard_with(down, steady))
    assert refused.value.budget == "dollars" and "may cost up to $0.003" in str(refused.value)

    budget.downgrade_model = "gpt-4o-mini"
    budget_actions.save_budget(budget)
    with pytest.raises(FallbackExhausted):  # the cheap model is down: the call fails, gpt-4o is not asked
        guarded_llm(ask, deps=guard_with(down, steady))
    assert steady.calls == 0
    assert Reservation.objects.get().status == "released"
    result = guarded_llm(ask, deps=guard_with(up, steady))
    assert (result.model, up.calls, steady.calls) == ("gpt-4o-mini", 1, 0)
    counter = counter_of(budget)
    assert counter.spent_usd <= budget.limit_usd
    assert_balanced(counter)
    assert UsageRecord.objects.get().model == "gpt-4o-mini"


def test_a_reservation_given_only_a_token_total_is_still_priced_against_a_dollar_limit(budget_db):
    budget = make_budget("dollars", scope="global", limit_usd=Decimal("0.0050"), on_block="fail")
    # 1000 tokens on gpt-4o: up to $0.01 if they are all output; the split is unknown, so assume the dearest.
    with pytest.raises(BudgetExceeded, match=r"may cost up to \$0\.0100"):
        reservations.reserve({"operation": "planning", "model": "gpt-4o", "estimated_tokens": 1_000})
    rid = reservations.reserve({"operation": "planning", "model": "gpt-4o", "estimated_tokens": 400})
    assert Reservation.objects.get(pk=rid).usd == Decimal("0.004")
    assert counter_of(budget).reserved_usd == Decimal("0.004")


def test_usage_reported_while_the_database_is_unreachable_fails_closed_with_a_clear_error(
    budget_db, unreachable_database
):
    with pytest.raises(BudgetUnavailable, match="unreachable"):
        ledger_actions.record_usage(usage(100, 100, agent="amy"))
