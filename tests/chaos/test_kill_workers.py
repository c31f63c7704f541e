"""kill -9 Celery workers at random points while hundreds of runs execute on two workers.

Hundreds of real side-effecting runs execute on two prefork workers — chaos-ledger (two ledger entries posted
through a tool whose acknowledgement is slow, so kills land between an effect and its step's end), t-steps (a
note written once at the end) and the support-refund demo agent (a refund, then an email that waits for a
reviewer) — while the test kills, at random moments, either a whole worker (parent and pool processes; a new
worker takes its place, as a supervisor would) or one pool process that holds a run (its parent forks a new
one). celery beat reclaims the expired leases; a reviewer approves the emails through review.actions.

Proves: every run reaches a terminal state (succeeded); no side effect happened twice (ToolEffect rows keyed
`run:<id>:step:<seq>`: exactly the effects each agent makes, each under a completed step of that tool; a
re-executed step found its effect by key); only steps in flight when their process died ran again, at most
one per run per kill that hit it (Step.executions); no escalation was lost, asked twice or decided twice.

Costs about 35 s in the bounded form (200 runs, 3 kills), several minutes with CHAOS_SCALE=long.
"""

from __future__ import annotations

import time

import pytest

from agentops.runs.models import Run, Step
from tests.chaos.harness import (
    Progress,
    Reviewer,
    assert_escalations_whole,
    effect_report,
    escalation_report,
    record_row,
    reexecuted_steps,
    retry_database,
    run_inputs,
    start_runs,
    statuses,
    terminal_count,
)
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.slow


def lease_pid(run: Run) -> int | None:
    """The pool process holding the run (lease owner is host:pid:nonce)."""
    try:
        return int(run.lease_owner.split(":")[1])
    except (IndexError, ValueError):
        return None


def running_pids(stack) -> dict[int, str]:
    """Pool processes of our workers that hold a run right now, with their worker's slot."""
    pools = {pid: slot for slot in stack.workers for pid in stack.pool_pids(slot)}
    holding = {}
    for run in Run.objects.filter(status=Run.Status.RUNNING).only("lease_owner"):
        pid = lease_pid(run)
        if pid in pools:
            holding[pid] = pools[pid]
    return holding


def kill_at_random(stack, rng, kind: str) -> dict:
    """Kill a whole worker or one pool process that holds a run; returns what was killed and which runs it hit.
    A moment with no run held (a replacement worker still starting, the other between two runs: runs take
    a few tens of ms now) is waited out for up to 5 s, so a kill lands on a run in flight."""
    try:
        holding = wait_for(lambda: running_pids(stack), timeout=5, interval=0.01, message="a run held by a worker")
    except AssertionError:  # none came: kill anyway (the assertions below then say the kill hit nothing)
        holding = {}
    if kind == "worker":
        slot = holding[rng.choice(sorted(holding))] if holding else rng.choice(sorted(stack.workers))
        pids = stack.kill_worker(slot)
    else:
        pid = rng.choice(sorted(holding)) if holding else rng.choice(stack.pool_pids("a"))
        slot = holding.get(pid, "a")
        pids = stack.kill_pool_process(pid)
    # After the kill no dead process can move a run on: the runs leased to them are the ones it hit.
    hit = [
        run.pk
        for run in Run.objects.filter(status=Run.Status.RUNNING).only("lease_owner")
        if lease_pid(run) in set(pids)
    ]
    return {"kind": kind, "slot": slot, "pids": pids, "hit": hit}


def test_kill_9_workers_at_random_points_while_runs_execute(stack, chaos_db, scale, rng, request):
    started = time.monotonic()
    reviewer = Reviewer()
    runs = start_runs(run_inputs(scale.kill_runs, rng))
    kills: list[dict] = []
    try:
        kill_while_running(stack, runs, kills, reviewer, scale, rng)
    finally:
        report = retry_database(lambda: account(runs, kills))
        record_row(
            request,
            "kill -9 workers",
            runs=len(runs),
            **{
                "kills/restarts": f"{len(kills)} kills ({sum(len(k['hit']) for k in kills)} runs hit)",
                "terminal": " ".join(f"{k}={v}" for k, v in sorted(report["final"].items())),
                "duplicate effects": report["effects"].duplicates,
                "re-executed steps": f"{sum(report['again'].values())} "
                f"({report['effects'].deduplicated} effects found by key)",
                "records lost": len(report["escalations"]["lost"])
                + len(report["effects"].missing)
                + len(report["escalations"]["decision_not_on_step"]),
                "seconds": round(time.monotonic() - started, 1),
            },
        )
        print("kills:", kills)

    final, effects, again, escalations = report["final"], report["effects"], report["again"], report["escalations"]
    assert final == {"succeeded": len(runs)}, {
        run.pk: (run.status, run.error_class, run.error[:200])
        for run in Run.objects.filter(pk__in=runs).exclude(status="succeeded")[:10]
    }
    assert len(kills) == scale.kills and all(kill["hit"] for kill in kills if kill["kind"] == "worker")
    assert effects.duplicates == 0 and not effects.orphans, effects
    assert not effects.missing, effects
    # Only a step in flight when its process died ran again: at most one per run per kill that hit it.
    hits = report["hits"]
    over = {run: n for run, n in again.items() if n > hits.get(run, 0)}
    assert not over, f"steps re-executed without a kill (or more than one per kill): {over} hits={hits}"
    assert sum(again.values()) <= sum(len(k["hit"]) for k in kills)
    assert_escalations_whole(escalations)
    # the steps that finished before a kill were never run again
    assert not Step.objects.filter(run_id__in=runs, executions__gt=2).exists()


def kill_while_running(stack, runs: list[int], kills: list[dict], reviewer: Reviewer, scale, rng) -> None:
    """Kill at random points until every run is terminal; the reviewer approves what waits meanwhile."""
    # Kill when this share of the runs has finished (a random point of the load), plus a random instant.
    thresholds = sorted(rng.uniform(0.1, 0.8) for _ in range(scale.kills))
    kinds = ["worker" if i % 2 == 0 else "pool-process" for i in range(scale.kills)]
    progress = Progress(runs, stall_seconds=30, timeout=scale.settle_timeout + 30 * scale.kills)

    def work_and_kill() -> None:
        reviewer.work()
        if thresholds and terminal_count(runs) >= thresholds[0] * len(runs):
            thresholds.pop(0)
            time.sleep(rng.uniform(0.0, 0.3))
            kills.append(kill_at_random(stack, rng, kinds[len(kills)]))
            stack.ensure_workers()  # a new worker takes the killed one's place (as a supervisor would)

    progress.until_done(work_and_kill, interval=0.05)


def account(runs: list[int], kills: list[dict]) -> dict:
    hits: dict[int, int] = {}
    for kill in kills:
        for run in kill["hit"]:
            hits[run] = hits.get(run, 0) + 1
    return {
        "final": statuses(runs),
        "effects": effect_report(runs),
        "again": reexecuted_steps(runs),
        "hits": hits,
        "escalations": escalation_report(runs),
    }
