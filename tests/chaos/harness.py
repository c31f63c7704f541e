"""What the chaos tests share: starting the demo and test agents' runs, a reviewer who decides escalations
through review.actions, waiting for runs to finish, and counting effects, re-executions and losses from the
database (the journal, ToolEffect rows keyed `run:<id>:step:<seq>`, the usage ledger, the audit log)."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis
from django.db import DatabaseError
from django.db.models import Count, Sum

from agentops.demo.agents import tools
from agentops.runs.actions import agents as agent_actions
from agentops.runs.actions import lifecycle
from agentops.runs.models import Run, Step, ToolEffect
from review import actions as review
from review.models import AuditEvent, Escalation
from tests.fixtures.people import ALICE
from tests.fixtures.stack import REPO_ROOT
from tests.fixtures.waiting import wait_for

LONG = os.environ.get("CHAOS_SCALE", "short").lower() == "long"
SUMMARY = REPO_ROOT / "test-results" / "chaos" / "summary.json"

TERMINAL = set(Run.TERMINAL)
SIDE_EFFECT_TOOLS = {"write_note", "send_note", "issue_refund", "send_email", "post_entry"}
AGENT_MODULES = ["tests.fixtures.test_agents", "tests.chaos.agents"]


def delivered_orders(count: int) -> list[str]:
    """Consumer orders the fake order book says were delivered (refundable without a high-value review)."""
    found = []
    for n in range(10_000, 99_999):
        order = tools.order_book(f"A-{n}")
        if order["status"] == "delivered":
            found.append(order["order_id"])
            if len(found) == count:
                return found
    raise AssertionError("the fake order book ran out of delivered orders")


def run_inputs(count: int, rng: random.Random) -> list[tuple[str, dict]]:
    """A mix of real side-effecting runs: half chaos-ledger (two entries posted through a slowly acknowledged
    side-effecting tool), a quarter t-steps (pauses, an echo per step, a note written once at the end), a
    quarter the support-refund demo agent (a refund, then an email that waits for a reviewer, then the
    answer)."""
    refunds = iter(delivered_orders(count // 4 + 1))
    inputs = []
    for i in range(count):
        if i % 4 == 3:
            data = {"order_id": next(refunds), "message": f"Broken on arrival ({i}).", "amount": 5}
            inputs.append(("support-refund", data))
        elif i % 4 == 1:
            pause = rng.choice([0.02, 0.05, 0.1, 0.2])
            inputs.append(("t-steps", {"topic": f"chaos {i}", "steps": 3, "pause": pause, "note": True}))
        else:
            inputs.append(("chaos-ledger", {"account": f"acct-{i}", "ack_seconds": rng.choice([0.05, 0.1, 0.2])}))
    return inputs


def start_runs(inputs: Iterable[tuple[str, dict]]) -> list[int]:
    agents = {}
    pks = []
    for name, data in inputs:
        agent = agents.get(name) or agents.setdefault(name, agent_actions.ensure_agent(name))
        pks.append(lifecycle.start_run(agent, data)[0].pk)
    return pks


def statuses(run_pks: list[int]) -> Counter:
    return Counter(Run.objects.filter(pk__in=run_pks).values_list("status", flat=True))


def terminal_count(run_pks: list[int]) -> int:
    return Run.objects.filter(pk__in=run_pks, status__in=TERMINAL).count()


@dataclass
class Reviewer:
    """Plays the reviewers as alice (the cast's reviewer): claims and approves every open escalation through
    review.actions, like the approval screen does. A decision that failed (the database or the broker was
    away) is tried again."""

    user: object = None
    decided: dict[int, str] = field(default_factory=dict)  # escalation → how our call ended
    errors: Counter = field(default_factory=Counter)

    def __post_init__(self):
        if self.user is None:
            self.user = ALICE.user()

    def work(self, limit: int = 50) -> int:
        """Decide what is open now; returns how many decisions were accepted."""
        try:
            open_ids = list(
                Escalation.objects.filter(state__in=Escalation.OPEN_STATES)
                .order_by("pk")
                .values_list("pk", flat=True)[:limit]
            )
        except DatabaseError as exc:
            self._failed(exc)
            return 0
        accepted = 0
        for pk in open_ids:
            try:
                review.claim(pk, self.user)
                review.decide(pk, self.user, "approved", comment="approved by the chaos reviewer")
            except review.DecisionConflict:
                continue
            except Exception as exc:  # the database or the broker is away: the decision may have committed
                self._failed(exc)
                self.decided.setdefault(pk, f"raised {type(exc).__name__}")
                continue
            self.decided[pk] = "accepted"
            accepted += 1
        return accepted

    def _failed(self, exc: BaseException) -> None:
        self.errors[type(exc).__name__] += 1
        if isinstance(exc, DatabaseError):
            reconnect_database()


class Progress:
    """Waits for runs to be terminal (``until_done``, through wait_for) and fails the wait when they stop
    moving: no run changed state for `stall_seconds` (a stuck run shows at once instead of after the whole
    deadline), or `timeout` passed."""

    def __init__(self, run_pks: list[int], *, stall_seconds: float, timeout: float, what: str = "every run"):
        self.run_pks, self.stall_seconds, self.what, self.timeout = run_pks, stall_seconds, what, timeout
        self.deadline = time.monotonic() + timeout
        self.last_change, self.last_seen = time.monotonic(), None

    def describe(self) -> str:
        return f"{self.what} to be terminal:\n" + describe_stuck(self.run_pks)

    def until_done(self, work: Callable[[], object] = lambda: None, interval: float = 0.1) -> None:
        """Poll every ``interval`` seconds until every run is terminal, calling ``work`` (the reviewer's,
        the kills) between polls; AssertionError if the runs stop moving or the deadline passes."""

        def done_or_work() -> bool:
            if self.done():
                return True
            work()
            return False

        wait_for(done_or_work, timeout=self.timeout + self.stall_seconds, interval=interval, message=self.describe)

    def done(self) -> bool:
        """True once every run is terminal; raises AssertionError naming the stuck runs if they stopped."""
        # Movement is a status change, an execution starting (a reclaimed run looks "running" before and
        # after) or a step being journaled.
        seen = (tuple(sorted(statuses(self.run_pks).items())), *_work_done(self.run_pks))
        now = time.monotonic()
        if seen != self.last_seen:
            self.last_seen, self.last_change = seen, now
        if dict(seen[0]).keys() <= TERMINAL:
            return True
        if now - self.last_change > self.stall_seconds or now > self.deadline:
            why = "made no progress for" if now <= self.deadline else "were not all terminal after"
            waited = self.stall_seconds if now <= self.deadline else "the deadline of"
            raise AssertionError(f"{self.what} {why} {waited} s:\n" + describe_stuck(self.run_pks))
        return False


def _work_done(run_pks: list[int]) -> tuple[int, int]:
    """(executions started, steps begun) of these runs."""
    runs = Run.objects.filter(pk__in=run_pks).aggregate(n=Sum("executions"))["n"] or 0
    steps = Step.objects.filter(run_id__in=run_pks).aggregate(n=Sum("executions"))["n"] or 0
    return runs, steps


def describe_stuck(run_pks: list[int], limit: int = 15) -> str:
    stuck = Run.objects.filter(pk__in=run_pks).exclude(status__in=TERMINAL).order_by("pk")
    held = broker_unacked_runs()
    lines = [f"{stuck.count()} not terminal; statuses {dict(statuses(run_pks))}"]
    failed = Counter(Run.objects.filter(pk__in=run_pks, status=Run.Status.FAILED).values_list("error_class", flat=True))
    if failed:
        lines.append(f"  failed runs by error class: {dict(failed)}")
    for run in stuck[:limit]:
        last = Step.objects.filter(run=run).order_by("-seq").first()
        escalations = list(Escalation.objects.filter(run=run).values_list("pk", "state", "decision"))
        lines.append(
            f"  run {run.pk} {run.agent.name} {run.status} executions={run.executions} lease={run.lease_owner!r} "
            f"expires={run.lease_expires_at} updated={run.updated_at:%H:%M:%S.%f} "
            f"last step={(last.seq, last.name, last.status) if last else None} escalations={escalations}"
        )
        if run.pk in held:
            lines.append(
                "    its only execute_run message sits in the broker's unacked set (a worker took it and died before "
                "claiming the run): Celery redelivers it only after the visibility timeout "
                "(CELERY_VISIBILITY_TIMEOUT, 900 s), and beat reclaims running runs only, not queued ones"
            )
    return "\n".join(lines)


def broker_unacked_runs() -> set[int]:
    """Runs whose execute_run message a worker took and has not acknowledged (kombu's `unacked` hash)."""
    import base64

    from django.conf import settings

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=5)
    found = set()
    try:
        for raw in client.hvals("unacked"):
            message = json.loads(raw)[0]
            if message.get("headers", {}).get("task") != "agentops.execute_run":
                continue
            args = json.loads(base64.b64decode(message["body"]))[0]
            found.add(int(args[0]))
    except (redis.exceptions.RedisError, ValueError, KeyError, IndexError):
        pass
    finally:
        client.close()
    return found


# --- accounting ------------------------------------------------------------------------------------------
@dataclass
class EffectReport:
    effects: int  # ToolEffect rows of these runs
    duplicates: int  # an effect beyond what the run's agent makes (a second refund / email / note / entry)
    orphans: list[str]  # effects whose key names no completed step of that tool
    deduplicated: int  # side-effecting steps that ran again and found their effect already recorded
    missing: list[int]  # succeeded runs without the effects their output says happened


def effect_report(run_pks: list[int]) -> EffectReport:
    wanted = set(run_pks)
    effects = []
    for key, tool in ToolEffect.objects.filter(idempotency_key__startswith="run:").values_list(
        "idempotency_key", "tool"
    ):
        _, run, _, seq = key.split(":")
        if int(run) in wanted:
            effects.append((int(run), int(seq), tool, key))
    per_run_tool = Counter((run, tool) for run, _, tool, _ in effects)
    per_step = Counter((run, seq) for run, seq, _, _ in effects)
    completed = {
        (s.run_id, s.seq): s
        for s in Step.objects.filter(run_id__in=wanted, kind="tool", name__in=SIDE_EFFECT_TOOLS, status="completed")
    }
    orphans = [
        key for run, seq, tool, key in effects if (run, seq) not in completed or completed[(run, seq)].name != tool
    ]
    deduplicated = sum(
        1
        for s in completed.values()
        if isinstance(s.result, dict) and (s.result.get("created") is False or s.result.get("first_time") is False)
    )
    missing = []
    for run in Run.objects.filter(pk__in=wanted, status=Run.Status.SUCCEEDED).select_related("agent"):
        expected = _expected_effects(run)
        if any(per_run_tool[(run.pk, tool)] != n for tool, n in expected.items()):
            missing.append(run.pk)
    return EffectReport(
        effects=len(effects),
        # more effects of a tool than the agent makes, or two under one step
        duplicates=sum(
            max(per_run_tool[(run.pk, tool)] - n, 0)
            for run in Run.objects.filter(pk__in=wanted)
            for tool, n in _expected_effects(run).items()
        )
        + sum(n - 1 for n in per_step.values() if n > 1),
        orphans=orphans,
        deduplicated=deduplicated,
        missing=missing,
    )


def _expected_effects(run: Run) -> dict[str, int]:
    """The effects a succeeded run's agent makes: tool → how many."""
    output = run.output or {}
    if run.agent.name == "chaos-ledger":
        return {"post_entry": 2}
    if run.agent.name == "t-steps" and run.input.get("note"):
        return {"write_note": 1}
    if run.agent.name == "support-refund" and output.get("status") == "refunded":
        return {"issue_refund": 1, "send_email": 1} if output.get("email") else {"issue_refund": 1}
    return {}


def reexecuted_steps(run_pks: list[int]) -> dict[int, int]:
    """Steps whose work started more than once, by run (Step.executions counts every begin)."""
    found: Counter = Counter()
    for run, executions in Step.objects.filter(run_id__in=run_pks, executions__gt=1).values_list(
        "run_id", "executions"
    ):
        found[run] += executions - 1
    return dict(found)


def escalation_report(run_pks: list[int]) -> dict:
    """Escalations lost, asked twice or decided twice: every step that waited for a human has its escalation,
    no step asked a human twice, every decided escalation was decided once (audit log) and its step still
    carries that decision."""
    waited = {(s.run_id, s.seq): s for s in Step.objects.filter(run_id__in=run_pks, escalation_id__isnull=False)}
    escalations = {e.pk: e for e in Escalation.objects.filter(run_id__in=run_pks)}
    lost = [f"run {run} step {seq}" for (run, seq), s in waited.items() if s.escalation_id not in escalations]
    per_step: dict[tuple, list[int]] = {}
    for e in escalations.values():
        per_step.setdefault((e.run_id, e.step_seq), []).append(e.pk)
    asked_twice = {f"run {run} step {seq}": sorted(pks) for (run, seq), pks in per_step.items() if len(pks) > 1}
    decided_events = Counter(
        AuditEvent.objects.filter(escalation_id__in=escalations, event="decided").values_list(
            "escalation_id", flat=True
        )
    )
    twice = [pk for pk, n in decided_events.items() if n > 1]
    not_on_step = []
    for e in escalations.values():
        step = waited.get((e.run_id, e.step_seq))
        if e.state == Escalation.State.DECIDED and (step is None or (step.decision or {}).get("escalation") != e.pk):
            not_on_step.append(e.pk)
    return {
        "escalations": len(escalations),
        "decided": sum(1 for e in escalations.values() if e.state == Escalation.State.DECIDED),
        "lost": lost,
        "asked_twice": asked_twice,
        "decided_twice": twice,
        "decision_not_on_step": not_on_step,
    }


def assert_escalations_whole(report: dict) -> None:
    assert not report["lost"], f"steps whose escalation is gone: {report['lost']}"
    assert not report["asked_twice"], (
        "a step asked a human again after its run was re-executed (the first decision was overwritten on the "
        f"step): {report['asked_twice']}"
    )
    assert not report["decided_twice"], f"escalations decided twice: {report['decided_twice']}"
    assert not report["decision_not_on_step"], f"decisions missing from their step: {report['decision_not_on_step']}"


def usage_totals(**filters) -> dict:
    from budgets.models import UsageRecord

    rows = UsageRecord.objects.filter(**filters)
    totals = rows.aggregate(n=Count("id"), tin=Sum("input_tokens"), tout=Sum("output_tokens"), usd=Sum("cost_usd"))
    return {"rows": totals["n"], "tokens": (totals["tin"] or 0) + (totals["tout"] or 0), "usd": totals["usd"] or 0}


# --- defects these tests found and that are still open ----------------------------------------------------
# The defects the first chaos runs found (runs stuck queued, a human asked twice, runs failed by a PostgreSQL
# blip, usage lost in a settle, workers stopped by losing Redis, a slow socket reconnect) are fixed, and the
# tests now fail outright if one comes back. What is left: while a defect below is open, a test that observed
# its signature (`known.extra[name] = where`) and then fails a check is reported as xfail naming it; any
# other failure stands. Fixed, the test passes and reports no xfail.
KNOWN_DEFECTS = {
    "answer-discarded": (
        "at the budget's edge, after an outage, an answer the upstream served for the primary model was thrown "
        "away and the call was answered by the backup instead: the served answer has no usage record (seen "
        "once; root cause not found yet; without an outage the edge call never reaches the primary)"
    ),
}


class xfail_on_known_defects:
    """`with xfail_on_known_defects() as known:` around a chaos test's checks: an AssertionError raised after
    the test recorded a known defect's signature in `known.extra` becomes an xfail naming the defect (and what
    the check said); any other failure stands."""

    def __init__(self):
        self.extra: dict[str, str] = {}  # defects the test observed (name → where)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is None or not issubclass(kind, AssertionError) or not self.extra:
            return False
        import pytest

        described = "; ".join(f"{name} ({where}): {KNOWN_DEFECTS[name]}" for name, where in self.extra.items())
        first_line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "assertion failed"
        print(f"\nchaos: known defects: {described}\nchaos: the check that failed: {exc}")
        pytest.xfail(f"known defects {sorted(self.extra)} — {first_line}")


# --- reconnecting after PostgreSQL went away ----------------------------------------------------------
def reconnect_database() -> None:
    """This process's connections died with PostgreSQL; the next query opens a new one."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        try:
            conn.close()
        except Exception:
            conn.connection = None  # a connection the server closed may refuse even to close


def retry_database(fn: Callable, *, timeout: float = 60.0):
    """Call fn until PostgreSQL answers it (reconnecting between tries)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except DatabaseError:
            if time.monotonic() > deadline:
                raise
            reconnect_database()
            time.sleep(0.2)


# --- the table printed at the end of the session ----------------------------------------------------
COLUMNS = (
    "scenario",
    "scale",
    "seed",
    "runs",
    "kills/restarts",
    "terminal",
    "duplicate effects",
    "re-executed steps",
    "records lost",
    "seconds",
)
chaos_rows: list[dict] = []


def record_row(request, scenario: str, **values) -> dict:
    """Add this test's numbers to the session's chaos table."""
    row = {"scenario": scenario, "scale": "long" if LONG else "short", "seed": getattr(request.node, "chaos_seed", "-")}
    row.update(values)
    chaos_rows.append(row)
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(json.dumps(chaos_rows, indent=2, default=str))
    print("\nchaos:", json.dumps(row, default=str))
    return row


def format_table(rows: list[dict]) -> list[str]:
    cells = [[str(row.get(col, "-")) for col in COLUMNS] for row in rows]
    widths = [max(len(col), *(len(c[i]) for c in cells)) for i, col in enumerate(COLUMNS)]
    line = lambda values: " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True))  # noqa: E731
    return [line(COLUMNS), "-+-".join("-" * w for w in widths), *(line(c) for c in cells)]
