"""Scale-out: two web processes and two Celery workers against one PostgreSQL and one Redis, as in the
README's "Production layout".

A reviewer signs in on web A and watches the review queue and a run page there over WebSockets; runs
execute on worker A or worker B; the reviewer decides through web B. Every live event crosses processes:
escalations opened by a worker, claims and decisions made on web B and run status changes made by the
other worker all reach the sockets on web A, and a run suspended on one worker resumes on the other from
its journal. Which worker takes a run is made certain with Celery's own remote control
(cancel_consumer / add_consumer on the shared `default` queue), not left to chance.

Costs about 20 s: two uvicorn and two worker start-ups, four short runs.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from agentops.config.source import bump_version, config_source
from agentops.runs.models import Run, Step, ToolEffect
from review.models import Escalation
from tests.fixtures.factories import waiting_approval_run
from tests.fixtures.people import ALICE, sign_in
from tests.fixtures.stack import reseed_runtime, start_web, start_worker

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = "default"
EVENT_TIMEOUT = 20.0


@pytest.fixture
def defaults(redis_client, settings):
    """The transactional flush removed the seeded policy rows: put them back and make every process reload."""
    settings.AGENTOPS_AGENT_MODULES = ["tests.fixtures.test_agents"]
    reseed_runtime()
    config_source().invalidate()
    bump_version()


@pytest.fixture
def two_webs(stack_env, logdir) -> Iterator[tuple[str, str]]:
    webs = [start_web(stack_env, logdir), start_web(stack_env, logdir)]
    try:
        yield webs[0].extra["url"], webs[1].extra["url"]
    finally:
        for proc in webs:
            proc.stop()


def node(name: str) -> str:
    """The Celery node name start_worker gives a worker (`--hostname <name>@%h`)."""
    return f"{name}@{socket.gethostname()}"


@pytest.fixture
def two_workers(stack_env, logdir) -> Iterator[tuple[str, str]]:
    """Workers `scale-a` and `scale-b` (one process each), the only consumers of the default queue while
    the test runs: workers other tests left running stop consuming and start again afterwards."""
    from agentops.celery import app

    others = [name for reply in app.control.ping(timeout=1) or [] for name in reply]
    if others:
        app.control.cancel_consumer(QUEUE, destination=others, reply=True, timeout=2)
    procs = [start_worker(stack_env, logdir, name="scale-a", concurrency=1)]
    procs.append(start_worker(stack_env, logdir, name="scale-b", concurrency=1))
    try:
        yield node("scale-a"), node("scale-b")
    finally:
        for proc in procs:
            proc.stop()
        if others:
            app.control.add_consumer(QUEUE, destination=others, reply=True, timeout=2)


def only_consumer(consumer: str, idle: str) -> None:
    """From now on only `consumer` takes tasks from the default queue. A message the idle worker had
    already popped when it stopped consuming is put back by kombu, so it still reaches `consumer`."""
    from agentops.celery import app

    added = app.control.add_consumer(QUEUE, destination=[consumer], reply=True, timeout=2)
    cancelled = app.control.cancel_consumer(QUEUE, destination=[idle], reply=True, timeout=2)
    assert [consumer] == [name for reply in added for name in reply], added
    assert [idle] == [name for reply in cancelled for name in reply], cancelled


def pool_pids(worker: str) -> set[int]:
    from agentops.celery import app

    stats = app.control.inspect(destination=[worker], timeout=2).stats() or {}
    return set(stats[worker]["pool"]["processes"])


def executed_runs(worker: str) -> int:
    from agentops.celery import app

    stats = app.control.inspect(destination=[worker], timeout=2).stats() or {}
    return stats[worker]["total"].get("agentops.execute_run", 0)


def echo_pids(run: Run) -> list[int]:
    """The worker process ids that executed the run's t_echo steps ("before", then "after" the decision)."""
    return [step.result["pid"] for step in Step.objects.filter(run=run, name="t_echo").order_by("seq")]


def form_value(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no {name} field in the page"
    return match.group(1)


def decide_on(base_url: str, session: httpx.Client, escalation: Escalation, comment: str) -> None:
    """What the reviewer's browser does on another web process: open the approval screen (which claims the
    item) and press Approve with the version the page showed."""
    with httpx.Client(base_url=base_url, cookies=session.cookies, timeout=15) as browser:
        page = browser.get(f"/review/{escalation.pk}/")
        assert page.status_code == 200, page.text[-500:]
        answer = browser.post(
            f"/review/{escalation.pk}/decide",
            data={
                "csrfmiddlewaretoken": form_value(page.text, "csrfmiddlewaretoken"),
                "action": "approve",
                "version": form_value(page.text, "version"),
                "confidence": "90",
                "comment": comment,
            },
        )
    assert answer.status_code == 302 and answer.headers["location"] == "/review/", answer.text[-500:]


@contextmanager
def live_socket(base_url: str, session: httpx.Client, group: str) -> Iterator[ClientConnection]:
    """A page's live socket for `group` on `base_url`, authenticated by the session cookie. The consumer
    joins the group before it accepts, so nothing published after this returns is missed."""
    url = base_url.replace("http://", "ws://") + f"/ws/live/{group}/"
    headers = {"Cookie": f"sessionid={session.cookies['sessionid']}", "Origin": base_url}
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        yield ws


def expect(ws: ClientConnection, matches: Callable[[dict], bool], what: str) -> dict:
    """Read the socket until an event `matches` (events for other items pass by)."""
    seen = []
    deadline = time.monotonic() + EVENT_TIMEOUT
    while time.monotonic() < deadline:
        try:
            message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        except TimeoutError:
            break
        if matches(message):
            return message
        seen.append(message)
    raise AssertionError(f"no {what} on the socket; saw {seen}")


def escalation_event(event: str, escalation: Escalation) -> Callable[[dict], bool]:
    return lambda m: m["event"] == event and m["data"].get("escalation") == escalation.pk


def run_status(run: Run, status: str) -> Callable[[dict], bool]:
    return lambda m: m["event"] == "run.changed" and m["data"] == {"run": run.pk, "status": status}


def test_live_updates_and_runs_cross_two_webs_and_two_workers(defaults, two_webs, two_workers):
    web_a, web_b = two_webs
    worker_a, worker_b = two_workers
    pids = {worker_a: pool_pids(worker_a), worker_b: pool_pids(worker_b)}
    assert pids[worker_a] and pids[worker_b] and not pids[worker_a] & pids[worker_b]

    reviewer = sign_in(web_a, ALICE, timeout=15)  # the session lives in PostgreSQL: web B honours it too
    with live_socket(web_a, reviewer, "review.queue") as queue, live_socket(web_a, reviewer, "runs") as runs:
        # run 1 executes on worker A up to its sensitive step; the escalation shows up on web A
        only_consumer(worker_a, idle=worker_b)
        run1, esc1 = waiting_approval_run()
        expect(queue, escalation_event("escalation.created", esc1), "escalation.created from worker A")
        expect(runs, run_status(run1, "waiting_human"), "run 1 waiting_human from worker A")

        # run 2 executes on worker B; the decision on run 1 goes through web B, and run 1 resumes on B
        only_consumer(worker_b, idle=worker_a)
        run2, esc2 = waiting_approval_run()
        expect(queue, escalation_event("escalation.created", esc2), "escalation.created from worker B")
        with live_socket(web_a, reviewer, f"run.{run1.pk}") as run1_page:
            decide_on(web_b, reviewer, esc1, "approved on web B")
            expect(queue, escalation_event("escalation.claimed", esc1), "escalation.claimed from web B")
            expect(queue, escalation_event("escalation.decided", esc1), "escalation.decided from web B")
            expect(run1_page, run_status(run1, "running"), "run 1 resuming on worker B")
            expect(run1_page, run_status(run1, "succeeded"), "run 1 succeeded on worker B")

        # the decision on run 2 goes through web B as well, and run 2 resumes on worker A
        only_consumer(worker_a, idle=worker_b)
        decide_on(web_b, reviewer, esc2, "approved on web B")
        expect(queue, escalation_event("escalation.decided", esc2), "escalation.decided from web B")
        expect(runs, run_status(run2, "succeeded"), "run 2 succeeded on worker A")

    run1, run2 = Run.objects.get(pk=run1.pk), Run.objects.get(pk=run2.pk)
    assert (run1.status, run2.status) == ("succeeded", "succeeded")
    assert run1.executions == run2.executions == 2  # suspended once, resumed once
    before1, after1 = echo_pids(run1)
    before2, after2 = echo_pids(run2)
    assert before1 in pids[worker_a] and after1 in pids[worker_b]  # suspended on A, resumed on B
    assert before2 in pids[worker_b] and after2 in pids[worker_a]  # suspended on B, resumed on A
    # at least: a task a previous test left in the shared queue may have been picked up (and found no run)
    assert executed_runs(worker_a) >= 2 and executed_runs(worker_b) >= 2
    for run, escalation in ((run1, esc1), (run2, esc2)):
        escalation.refresh_from_db()
        assert (escalation.state, escalation.decision, escalation.comment) == (
            "decided",
            "approved",
            "approved on web B",
        )
        assert escalation.decided_by.username == "alice"
        send = Step.objects.get(run=run, name="send_note")
        assert ToolEffect.objects.filter(idempotency_key=f"run:{run.pk}:step:{send.seq}").count() == 1
